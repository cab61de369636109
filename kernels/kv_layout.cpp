#include "kernels/kv_layout.h"

#include <string>

namespace kvfleet::kernels {

Status validate_kv_layout(const KvLayout& l) {
  if (l.num_layers <= 0 || l.num_kv_heads <= 0 || l.head_dim <= 0 || l.block_tokens <= 0) {
    return invalid_argument("KV layout needs positive layers, KV heads, head_dim and block tokens");
  }
  if (l.dtype != DType::kFp32 && l.dtype != DType::kFp16 && l.dtype != DType::kBf16) {
    return invalid_argument("KV cache dtype must be fp32, fp16 or bf16, got " +
                            std::string(dtype_name(l.dtype)));
  }
  return Status::ok();
}

}  // namespace kvfleet::kernels
