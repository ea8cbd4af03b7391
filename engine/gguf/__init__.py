"""A model on its GGUF file's own blocks: the block format and the Linear layers on it (blocks.py), the C++ extension
that runs them (kernels/, built by build.py), and prefill's attention on that extension (attention.py)."""
