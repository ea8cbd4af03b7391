// What the extension's two sources share: blocks.cpp defines mm_group (decode_ops.cpp's fused layers call it) and
// the module; decode_ops.cpp defines register_decode_ops (the module calls it).
#pragma once

#include <torch/extension.h>

#include <cstdint>
#include <vector>

// x: [m, k] (float32 or bfloat16) against several weights of the same input width (their blocks [n_i, k / 256 x
// block bytes] and GGML types, an optional float32 bias [n_i] each): [m, n_i] each, in x's dtype. Optionally, around
// the products: `norm` (an RMSNorm weight [k], with `eps`) applied to x first; `gated` (two weights): the one output
// silu(x W0) * (x W1); `residual` [m, n] (one weight): added to the output.
std::vector<torch::Tensor> mm_group(torch::Tensor x, std::vector<torch::Tensor> blocks, std::vector<int64_t> types,
                                    std::vector<c10::optional<torch::Tensor>> biases,
                                    c10::optional<torch::Tensor> norm, double eps, bool gated,
                                    c10::optional<torch::Tensor> residual);

// The decode step's rotary embedding, attention and fused layers (DecodeLayers), added to the module `m`.
void register_decode_ops(pybind11::module& m);
