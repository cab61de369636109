#pragma once
// Reading and writing the safetensors format: an 8-byte little-endian header length, a JSON
// header mapping tensor names to {dtype, shape, data_offsets}, then the raw data. Files are
// memory-mapped; every offset, size and shape is checked before any byte is read, so a truncated
// or inconsistent file is an error naming the file and tensor, never a crash.

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace kvfleet::worker {

struct TensorInfo {
  std::string dtype;                // "F32", "F16", "BF16", ...
  std::vector<std::int64_t> shape;  // [] for a scalar
  std::size_t begin = 0;            // byte offsets into the data section
  std::size_t end = 0;
  std::int64_t numel() const;
};

class SafetensorsFile {
 public:
  static Result<std::unique_ptr<SafetensorsFile>> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  // The tensor as fp32 (F32, F16 and BF16 are converted), checked against `shape`.
  Result<std::vector<float>> read_f32(const std::string& name,
                                      const std::vector<std::int64_t>& shape) const;
  const std::string& path() const { return path_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  const std::byte* map_ = nullptr;
  std::size_t map_size_ = 0;
  const std::byte* data_ = nullptr;  // start of the data section
  std::map<std::string, TensorInfo> tensors_;
};

struct TensorToWrite {
  std::string name;
  std::vector<std::int64_t> shape;
  const float* data = nullptr;  // numel floats, written as F32
};

// Writes tensors (in the given order) as an F32 safetensors file with optional string metadata.
Status write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                         const std::map<std::string, std::string>& metadata = {});

std::string shape_to_string(const std::vector<std::int64_t>& shape);

}  // namespace kvfleet::worker
