#pragma once
// GgufWriter: a GGUF version 3 file (the format of llama.cpp and ggml) with metadata and F32
// tensors. Little-endian hosts only, like the safetensors reader.
//
// Layout, as ggml's gguf.cpp reads it: magic "GGUF", version 3, tensor count (u64), metadata
// count (u64); each metadata entry (key, type, value); each tensor's name, dimensions (innermost
// first: ne[0] is the number of columns), type and offset into the data section; padding to
// the alignment; then the tensors' data, each starting at a multiple of the alignment
// (general.alignment, 32 unless set).

#include <cstdint>
#include <filesystem>
#include <string>
#include <variant>
#include <vector>

#include "common/status.h"

namespace kvfleet::hfmodel {

class GgufWriter {
 public:
  // Metadata, written in the order added. A key added twice is an error at write().
  void add_u32(std::string key, std::uint32_t value);
  void add_i32(std::string key, std::int32_t value);
  void add_f32(std::string key, float value);
  void add_bool(std::string key, bool value);
  void add_string(std::string key, std::string value);
  void add_strings(std::string key, std::vector<std::string> values);
  void add_i32s(std::string key, std::vector<std::int32_t> values);
  void add_f32s(std::string key, std::vector<float> values);

  // An F32 tensor. `shape` is PyTorch's (outermost first, e.g. [out_features, in_features] for a
  // linear layer's weight); the file lists it innermost first, as ggml does. `data` holds the
  // product of `shape` values in row-major order.
  void add_tensor(std::string name, std::vector<std::int64_t> shape, std::vector<float> data);

  // Default 32; written as general.alignment when it differs. A power of two.
  void set_alignment(std::uint32_t alignment) { alignment_ = alignment; }

  // Writes the file (through a temporary file in the same folder, renamed at the end).
  Status write(const std::filesystem::path& path) const;

  std::size_t tensor_count() const { return tensors_.size(); }
  // Bytes of tensor data, without padding.
  std::size_t tensor_bytes() const;

 private:
  using Value =
      std::variant<std::uint32_t, std::int32_t, float, bool, std::string, std::vector<std::string>,
                   std::vector<std::int32_t>, std::vector<float>>;
  struct Tensor {
    std::string name;
    std::vector<std::int64_t> shape;
    std::vector<float> data;
  };
  std::vector<std::pair<std::string, Value>> metadata_;
  std::vector<Tensor> tensors_;
  std::uint32_t alignment_ = 32;
};

}  // namespace kvfleet::hfmodel
