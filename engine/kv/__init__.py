"""The KV pool: pages of keys and values shared by every request with the same prefix (`KVStore`, the tensors;
`BlockManager`, which page holds which prefix; `KVCacheManager` in manager.py over both), and the tiers a page goes
to when the device's pool is full: host memory, then page files on disk that a new process can load."""
