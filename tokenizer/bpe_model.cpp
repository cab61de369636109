#include "tokenizer/bpe_model.h"

#include <algorithm>
#include <cstdio>

#include "tokenizer/text.h"

namespace kvfleet::tokenizer::detail {
namespace {

constexpr std::size_t kMaxCacheEntries = 1 << 16;  // then the cache starts over

std::uint64_t pair_key(std::int32_t left, std::int32_t right) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(left)) << 32) |
         static_cast<std::uint32_t>(right);
}

std::uint64_t mix(std::uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return k;
}

struct Symbol {
  std::int32_t id;  // -1: a character without a token (character-level only)
  std::int32_t prev;
  std::int32_t next;
  std::uint32_t begin;  // bytes of the word this symbol covers
  std::uint32_t len;    // 0: merged into its left neighbour
};

struct Candidate {
  std::int32_t rank;
  std::int32_t pos;  // the left symbol
  std::int32_t left_id;
  std::int32_t right_id;
  std::int32_t merged_id;
  bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

std::unique_ptr<BpeModel> BpeModel::build(
    StringMap<std::int32_t> vocab, const std::vector<std::pair<std::string, std::string>>& merges,
    BpeOptions options) {
  std::unique_ptr<BpeModel> model(new BpeModel());
  model->options_ = options;
  model->vocab_ = std::move(vocab);
  std::fill(std::begin(model->byte_ids_), std::end(model->byte_ids_), -1);
  std::fill(std::begin(model->fallback_ids_), std::end(model->fallback_ids_), -1);
  for (int b = 0; b < 256; ++b) {
    if (options.byte_level) {
      auto it = model->vocab_.find(std::string(1, static_cast<char>(b)));
      if (it != model->vocab_.end()) model->byte_ids_[b] = it->second;
    }
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    auto it = model->vocab_.find(name);
    if (it != model->vocab_.end()) {
      model->fallback_ids_[b] = it->second;
    }
  }
  if (!options.byte_level) {
    for (const auto& [key, id] : model->vocab_) {
      std::size_t i = 0;
      if (key.empty()) continue;
      const char32_t cp = next_code_point(key, i);
      if (i == key.size()) model->char_ids_[cp] = id;
    }
  }

  std::size_t capacity = 16;
  while (capacity < merges.size() * 2) capacity <<= 1;
  model->merges_.assign(capacity, Slot{});
  model->mask_ = capacity - 1;
  std::string joined;
  for (std::size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    auto left = model->vocab_.find(a);
    auto right = model->vocab_.find(b);
    joined.assign(a).append(b);
    auto merged = model->vocab_.find(joined);
    if (left == model->vocab_.end() || right == model->vocab_.end() ||
        merged == model->vocab_.end()) {
      continue;
    }
    model->insert_merge(left->second, right->second, static_cast<std::int32_t>(rank),
                        merged->second);
  }
  return model;
}

void BpeModel::insert_merge(std::int32_t left, std::int32_t right, std::int32_t rank,
                            std::int32_t id) {
  const std::uint64_t key = pair_key(left, right);
  for (std::uint64_t i = mix(key) & mask_;; i = (i + 1) & mask_) {
    Slot& slot = merges_[i];
    if (slot.key == kEmpty) {
      slot = Slot{key, rank, id};
      ++merge_count_;
      return;
    }
    if (slot.key == key) {
      slot.rank = rank;  // a later duplicate wins, as in the reference
      slot.id = id;
      return;
    }
  }
}

const BpeModel::Slot* BpeModel::find_merge(std::int32_t left, std::int32_t right) const {
  const std::uint64_t key = pair_key(left, right);
  for (std::uint64_t i = mix(key) & mask_;; i = (i + 1) & mask_) {
    const Slot& slot = merges_[i];
    if (slot.key == key) return &slot;
    if (slot.key == kEmpty) return nullptr;
  }
}

void BpeModel::encode_word(std::string_view word, std::vector<std::int32_t>& out) const {
  if (options_.ignore_merges) {
    auto it = vocab_.find(word);
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() < kMaxCachedWord;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const std::size_t first = out.size();
  merge_word(word, out);
  if (cacheable) {
    std::vector<std::int32_t> ids(out.begin() + static_cast<std::ptrdiff_t>(first), out.end());
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.emplace(std::string(word), std::move(ids));
  }
}

void BpeModel::merge_word(std::string_view word, std::vector<std::int32_t>& out) const {
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap_storage;
  symbols.clear();
  if (options_.byte_level) {
    for (std::size_t i = 0; i < word.size(); ++i) {
      const auto b = static_cast<unsigned char>(word[i]);
      symbols.push_back(Symbol{byte_ids_[b], static_cast<std::int32_t>(symbols.size()) - 1,
                               static_cast<std::int32_t>(symbols.size()) + 1,
                               static_cast<std::uint32_t>(i), 1});
    }
  } else {
    std::size_t i = 0;
    while (i < word.size()) {
      const std::size_t begin = i;
      const char32_t cp = next_code_point(word, i);
      auto it = char_ids_.find(cp);
      symbols.push_back(Symbol{
          it == char_ids_.end() ? -1 : it->second, static_cast<std::int32_t>(symbols.size()) - 1,
          static_cast<std::int32_t>(symbols.size()) + 1, static_cast<std::uint32_t>(begin),
          static_cast<std::uint32_t>(i - begin)});
    }
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  std::vector<Candidate>& heap = heap_storage;  // a min-heap on (rank, position)
  heap.clear();
  auto consider = [&](std::int32_t pos) {
    const Symbol& left = symbols[static_cast<std::size_t>(pos)];
    if (left.next < 0 || left.id < 0) return;
    const Symbol& right = symbols[static_cast<std::size_t>(left.next)];
    if (right.id < 0) return;
    if (const Slot* merge = find_merge(left.id, right.id)) {
      heap.push_back(Candidate{merge->rank, pos, left.id, right.id, merge->id});
      std::push_heap(heap.begin(), heap.end(), std::greater<>{});
    }
  };
  for (std::int32_t pos = 0; pos + 1 < static_cast<std::int32_t>(symbols.size()); ++pos) {
    consider(pos);
  }
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>{});
    const Candidate c = heap.back();
    heap.pop_back();
    // Stale entries (a side already merged into something else) are skipped.
    Symbol& left = symbols[static_cast<std::size_t>(c.pos)];
    if (left.len == 0 || left.id != c.left_id || left.next < 0) continue;
    Symbol& right = symbols[static_cast<std::size_t>(left.next)];
    if (right.id != c.right_id) continue;
    left.id = c.merged_id;
    left.len += right.len;
    left.next = right.next;
    right.len = 0;
    if (left.next >= 0) symbols[static_cast<std::size_t>(left.next)].prev = c.pos;
    if (left.prev >= 0) consider(left.prev);
    consider(c.pos);
  }

  for (std::int32_t pos = 0; pos >= 0; pos = symbols[static_cast<std::size_t>(pos)].next) {
    const Symbol& s = symbols[static_cast<std::size_t>(pos)];
    if (s.id >= 0) {
      out.push_back(s.id);
      continue;
    }
    // A character without a token: its bytes with byte_fallback when every one has a token,
    // else the unknown token, else nothing (as the reference).
    if (options_.byte_fallback) {
      bool all = true;
      for (std::uint32_t k = 0; k < s.len; ++k) {
        all = all && fallback_ids_[static_cast<unsigned char>(word[s.begin + k])] >= 0;
      }
      if (all) {
        for (std::uint32_t k = 0; k < s.len; ++k) {
          out.push_back(fallback_ids_[static_cast<unsigned char>(word[s.begin + k])]);
        }
        continue;
      }
    }
    if (options_.unk_id) out.push_back(*options_.unk_id);
  }
}

}  // namespace kvfleet::tokenizer::detail
