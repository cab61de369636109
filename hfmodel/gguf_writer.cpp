#include "hfmodel/gguf_writer.h"

#include <fstream>
#include <set>
#include <type_traits>

namespace kvfleet::hfmodel {
namespace {

// gguf_type in ggml's gguf.h.
enum : std::uint32_t {
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
};
constexpr std::uint32_t kTensorF32 = 0;  // ggml_type GGML_TYPE_F32

class Out {
 public:
  void u32(std::uint32_t v) { raw(&v, 4); }
  void i32(std::int32_t v) { raw(&v, 4); }
  void u64(std::uint64_t v) { raw(&v, 8); }
  void f32(float v) { raw(&v, 4); }
  void str(const std::string& s) {
    u64(s.size());
    raw(s.data(), s.size());
  }
  void raw(const void* p, std::size_t n) { bytes_.append(static_cast<const char*>(p), n); }
  void pad(std::size_t alignment) {
    bytes_.append((alignment - bytes_.size() % alignment) % alignment, '\0');
  }
  const std::string& bytes() const { return bytes_; }

 private:
  std::string bytes_;
};

std::uint64_t padded(std::uint64_t n, std::uint64_t alignment) {
  return (n + alignment - 1) / alignment * alignment;
}

}  // namespace

void GgufWriter::add_u32(std::string key, std::uint32_t value) {
  metadata_.emplace_back(std::move(key), value);
}
void GgufWriter::add_i32(std::string key, std::int32_t value) {
  metadata_.emplace_back(std::move(key), value);
}
void GgufWriter::add_f32(std::string key, float value) {
  metadata_.emplace_back(std::move(key), value);
}
void GgufWriter::add_bool(std::string key, bool value) {
  metadata_.emplace_back(std::move(key), value);
}
void GgufWriter::add_string(std::string key, std::string value) {
  metadata_.emplace_back(std::move(key), std::move(value));
}
void GgufWriter::add_strings(std::string key, std::vector<std::string> values) {
  metadata_.emplace_back(std::move(key), std::move(values));
}
void GgufWriter::add_i32s(std::string key, std::vector<std::int32_t> values) {
  metadata_.emplace_back(std::move(key), std::move(values));
}
void GgufWriter::add_f32s(std::string key, std::vector<float> values) {
  metadata_.emplace_back(std::move(key), std::move(values));
}

void GgufWriter::add_tensor(std::string name, std::vector<std::int64_t> shape,
                            std::vector<float> data) {
  tensors_.push_back({std::move(name), std::move(shape), std::move(data)});
}

std::size_t GgufWriter::tensor_bytes() const {
  std::size_t n = 0;
  for (const Tensor& t : tensors_) n += t.data.size() * sizeof(float);
  return n;
}

Status GgufWriter::write(const std::filesystem::path& path) const {
  if (alignment_ == 0 || (alignment_ & (alignment_ - 1)) != 0) {
    return invalid_argument("GGUF alignment " + std::to_string(alignment_) +
                            " is not a power of two");
  }
  std::set<std::string> keys, names;
  for (const auto& [key, value] : metadata_) {
    if (!keys.insert(key).second) return invalid_argument("GGUF metadata key '" + key + "' twice");
  }
  for (const Tensor& t : tensors_) {
    if (!names.insert(t.name).second) return invalid_argument("GGUF tensor '" + t.name + "' twice");
    std::int64_t n = 1;
    for (std::int64_t d : t.shape) n *= d;
    if (t.shape.empty() || t.shape.size() > 4 || n != static_cast<std::int64_t>(t.data.size())) {
      return invalid_argument("GGUF tensor '" + t.name + "': " + std::to_string(t.data.size()) +
                              " values do not fill its shape (1 to 4 dimensions)");
    }
  }

  Out h;
  h.raw("GGUF", 4);
  h.u32(3);
  h.u64(tensors_.size());
  const bool write_alignment = alignment_ != 32;
  h.u64(metadata_.size() + (write_alignment ? 1 : 0));
  if (write_alignment) {
    h.str("general.alignment");
    h.u32(kU32);
    h.u32(alignment_);
  }
  for (const auto& [key, value] : metadata_) {
    h.str(key);
    std::visit(
        [&h](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, std::uint32_t>) {
            h.u32(kU32);
            h.u32(v);
          } else if constexpr (std::is_same_v<T, std::int32_t>) {
            h.u32(kI32);
            h.i32(v);
          } else if constexpr (std::is_same_v<T, float>) {
            h.u32(kF32);
            h.f32(v);
          } else if constexpr (std::is_same_v<T, bool>) {
            h.u32(kBool);
            const std::uint8_t b = v ? 1 : 0;
            h.raw(&b, 1);
          } else if constexpr (std::is_same_v<T, std::string>) {
            h.u32(kString);
            h.str(v);
          } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
            h.u32(kArray);
            h.u32(kString);
            h.u64(v.size());
            for (const auto& s : v) h.str(s);
          } else if constexpr (std::is_same_v<T, std::vector<std::int32_t>>) {
            h.u32(kArray);
            h.u32(kI32);
            h.u64(v.size());
            h.raw(v.data(), v.size() * 4);
          } else {
            static_assert(std::is_same_v<T, std::vector<float>>);
            h.u32(kArray);
            h.u32(kF32);
            h.u64(v.size());
            h.raw(v.data(), v.size() * 4);
          }
        },
        value);
  }
  std::uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    h.str(t.name);
    h.u32(static_cast<std::uint32_t>(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) {
      h.u64(static_cast<std::uint64_t>(*it));
    }
    h.u32(kTensorF32);
    h.u64(offset);
    offset = padded(offset + t.data.size() * sizeof(float), alignment_);
  }
  h.pad(alignment_);

  const std::filesystem::path tmp = path.string() + ".partial";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return io_error("cannot write '" + tmp.string() + "'");
    out.write(h.bytes().data(), static_cast<std::streamsize>(h.bytes().size()));
    const std::string zeros(alignment_, '\0');
    for (const Tensor& t : tensors_) {
      const std::size_t n = t.data.size() * sizeof(float);
      out.write(reinterpret_cast<const char*>(t.data.data()), static_cast<std::streamsize>(n));
      out.write(zeros.data(), static_cast<std::streamsize>(padded(n, alignment_) - n));
    }
    out.flush();
    if (!out) {
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      return io_error("writing '" + tmp.string() + "' failed");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec)
    return io_error("cannot rename '" + tmp.string() + "' to '" + path.string() +
                    "': " + ec.message());
  return Status::ok();
}

}  // namespace kvfleet::hfmodel
