#include "worker/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kernels/cpu/convert.h"

namespace kvfleet::worker {
namespace {

using nlohmann::json;

constexpr std::size_t kMaxHeaderBytes = 100u << 20;  // the format's own limit

std::size_t dtype_size(const std::string& dtype) {
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL" || dtype == "F8_E4M3" || dtype == "F8_E5M2")
    return 1;
  return 0;
}

}  // namespace

std::int64_t TensorInfo::numel() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::string shape_to_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Result<std::unique_ptr<SafetensorsFile>> SafetensorsFile::open(const std::string& path) {
  const std::string where = "safetensors file '" + path + "'";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return not_found(where + ": " + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    return io_error(where + ": " + std::strerror(e));
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return invalid_argument(where + " is truncated: " + std::to_string(size) + " bytes, no header");
  }
  void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);
  if (map == MAP_FAILED) return io_error(where + ": mmap failed: " + std::strerror(map_errno));

  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->map_ = static_cast<const std::byte*>(map);
  f->map_size_ = size;

  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i)
    header_len = (header_len << 8) | static_cast<std::uint8_t>(f->map_[i]);
  if (header_len > kMaxHeaderBytes || header_len > size - 8) {
    return invalid_argument(where + " is truncated or corrupt: header of " +
                            std::to_string(header_len) + " bytes in a " + std::to_string(size) +
                            "-byte file");
  }
  const char* hdr = reinterpret_cast<const char*>(f->map_ + 8);
  json header = json::parse(hdr, hdr + header_len, nullptr, false);
  if (header.is_discarded() || !header.is_object()) {
    return invalid_argument(where + ": the header is not a JSON object");
  }
  f->data_ = f->map_ + 8 + header_len;
  const std::size_t data_size = size - 8 - header_len;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string tw = where + ": tensor '" + name + "'";
    if (!entry.is_object() || !entry.contains("dtype") || !entry["dtype"].is_string() ||
        !entry.contains("shape") || !entry["shape"].is_array() || !entry.contains("data_offsets") ||
        !entry["data_offsets"].is_array() || entry["data_offsets"].size() != 2) {
      return invalid_argument(tw + " needs dtype, shape and two data_offsets");
    }
    TensorInfo info;
    info.dtype = entry["dtype"].get<std::string>();
    for (const auto& d : entry["shape"]) {
      if (!d.is_number_integer() || d.get<std::int64_t>() < 0) {
        return invalid_argument(tw + " has a bad shape " + entry["shape"].dump());
      }
      info.shape.push_back(d.get<std::int64_t>());
    }
    const auto& off = entry["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      return invalid_argument(tw + " has bad data_offsets " + off.dump());
    }
    info.begin = off[0].get<std::size_t>();
    info.end = off[1].get<std::size_t>();
    const std::size_t elem = dtype_size(info.dtype);
    if (elem == 0) return invalid_argument(tw + " has an unknown dtype '" + info.dtype + "'");
    std::int64_t elements = 1;
    for (auto d : info.shape) {
      if (d != 0 && elements > (std::int64_t{1} << 48) / d) {
        return invalid_argument(tw + " has an impossibly large shape " + entry["shape"].dump());
      }
      elements *= d;
    }
    if (info.end < info.begin || info.end > data_size) {
      return invalid_argument(tw + " lies outside the file's " + std::to_string(data_size) +
                              " data bytes (offsets " + off.dump() + "): the file is truncated");
    }
    if (static_cast<std::size_t>(info.numel()) * elem != info.end - info.begin) {
      return invalid_argument(tw + ": shape " + shape_to_string(info.shape) + " of " + info.dtype +
                              " needs " +
                              std::to_string(info.numel() * static_cast<std::int64_t>(elem)) +
                              " bytes, the offsets give " + std::to_string(info.end - info.begin));
    }
    f->tensors_.emplace(name, std::move(info));
  }
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) munmap(const_cast<std::byte*>(map_), map_size_);
}

Result<std::vector<float>> SafetensorsFile::read_f32(const std::string& name,
                                                     const std::vector<std::int64_t>& shape) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return not_found("safetensors file '" + path_ + "' has no tensor '" + name + "'");
  }
  const TensorInfo& t = it->second;
  if (t.shape != shape) {
    return invalid_argument("safetensors file '" + path_ + "': tensor '" + name + "' has shape " +
                            shape_to_string(t.shape) + ", the model needs " +
                            shape_to_string(shape));
  }
  std::vector<float> out(static_cast<size_t>(t.numel()));
  const std::byte* src = data_ + t.begin;
  if (t.dtype == "F32") {
    std::memcpy(out.data(), src, out.size() * 4);
  } else if (t.dtype == "F16" || t.dtype == "BF16") {
    for (size_t i = 0; i < out.size(); ++i) {
      std::uint16_t bits;
      std::memcpy(&bits, src + 2 * i, 2);
      out[i] =
          t.dtype == "F16" ? kernels::cpu::fp16_to_fp32(bits) : kernels::cpu::bf16_to_fp32(bits);
    }
  } else {
    return invalid_argument("safetensors file '" + path_ + "': tensor '" + name + "' is " +
                            t.dtype + "; weights must be F32, F16 or BF16");
  }
  return out;
}

Status write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  std::size_t offset = 0;
  for (const auto& t : tensors) {
    std::int64_t n = 1;
    for (auto d : t.shape) n *= d;
    const std::size_t bytes = static_cast<std::size_t>(n) * 4;
    header[t.name] = {
        {"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keep the data 8-byte aligned
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return io_error("cannot write '" + path + "'");
  std::uint64_t len = text.size();
  char len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  out.write(len_bytes, 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto& t : tensors) {
    std::int64_t n = 1;
    for (auto d : t.shape) n *= d;
    out.write(reinterpret_cast<const char*>(t.data), static_cast<std::streamsize>(n * 4));
  }
  out.flush();
  if (!out) return io_error("writing '" + path + "' failed");
  return Status::ok();
}

}  // namespace kvfleet::worker
