// The engine's scheduling policy (worker/scheduler.h) on hand-built sequences, a BlockPool and a
// HostKvStore of chosen sizes: no model, no engine. A small harness does what the engine does
// with a plan (spills swap-outs, releases restored host blocks, advances computed tokens,
// appends a token when a sequence's last token was computed, publishes full blocks), and tracks
// what each device and host block holds, so the tests can check that every sequence's KV is its
// own and that no block leaks.
#include "worker/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>

#include "kvstore/host_store.h"
#include "kvstore/prefix_hash.h"
#include "tests/test_util.h"

namespace kvfleet::worker {
namespace {

using kvstore::BlockHash;
using kvstore::BlockId;

constexpr std::int64_t kBt = 4;  // tokens per block
constexpr std::uint64_t kSalt = 99;

kernels::KvLayout layout() {
  kernels::KvLayout l;
  l.num_layers = 1;
  l.num_kv_heads = 1;
  l.head_dim = 1;
  l.block_tokens = kBt;
  return l;  // 32-byte blocks
}

std::int64_t blocks_for(std::int64_t tokens) {
  return (tokens + kBt - 1) / kBt;
}

// Tokens base, base + 1, ...: prompts built from the same base share prefixes.
std::vector<std::int32_t> tokens(std::int64_t n, std::int32_t base = 0) {
  std::vector<std::int32_t> t(static_cast<size_t>(n));
  for (size_t i = 0; i < t.size(); ++i) t[i] = base + static_cast<std::int32_t>(i);
  return t;
}

std::vector<std::int32_t> concat(std::vector<std::int32_t> a, const std::vector<std::int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// What a block holds: the identity of the KV of tokens [start, start + count) of a sequence,
// i.e. chain_hash(hash of the prefix before the block, the tokens written). A full block's
// content equals its prefix hash.
using Content = std::optional<BlockHash>;

Content content_of(const std::vector<std::int32_t>& toks, std::int64_t block,
                   std::int64_t written) {
  const auto before = kvstore::full_block_hashes(
      kSalt, std::span(toks).first(static_cast<size_t>(block * kBt)), kBt);
  const BlockHash parent = block == 0 ? kvstore::root_hash(kSalt) : before.back();
  return kvstore::chain_hash(parent, std::span(toks).subspan(static_cast<size_t>(block * kBt),
                                                             static_cast<size_t>(written)));
}

struct Harness {
  // host_blocks < 0: no host store.
  Harness(std::int32_t device_blocks, std::int32_t host_blocks,
          SchedulerConfig scheduler_config = {}, double high_watermark = 1.0,
          double low_watermark = 1.0)
      : device(device_blocks),
        host(make_host(host_blocks, high_watermark, low_watermark)),
        config(with_salt(scheduler_config)),
        scheduler(this->config, layout(), device, host ? &host->index() : nullptr),
        zeros(static_cast<size_t>(device_blocks) * layout().block_bytes()),
        device_content(static_cast<size_t>(device_blocks)),
        host_content(static_cast<size_t>(std::max(host_blocks, 0))) {}

  static std::unique_ptr<kvstore::HostKvStore> make_host(std::int32_t blocks, double high,
                                                         double low) {
    if (blocks < 0) return nullptr;
    const std::size_t bb = layout().block_bytes();
    auto h = kvstore::HostKvStore::create({static_cast<std::size_t>(blocks) * bb, bb, high, low});
    EXPECT_TRUE(h.is_ok()) << h.status().to_string();
    return std::move(h).value();
  }
  static SchedulerConfig with_salt(SchedulerConfig c) {
    c.hash_salt = kSalt;
    return c;
  }

  // A new sequence (admission order = creation order), not yet given to the scheduler.
  Sequence* make(std::vector<std::int32_t> toks, std::int64_t max_tokens = 1000) {
    auto s = std::make_unique<Sequence>();
    s->id = next_id++;
    s->arrival = next_arrival++;
    s->prompt_len = static_cast<std::int64_t>(toks.size());
    s->tokens = std::move(toks);
    s->params.max_tokens = max_tokens;
    seqs.push_back(std::move(s));
    return seqs.back().get();
  }
  Sequence* add(std::vector<std::int32_t> toks, std::int64_t max_tokens = 1000) {
    Sequence* s = make(std::move(toks), max_tokens);
    scheduler.add(s);
    return s;
  }
  // A sequence whose first `computed` tokens' KV arrived from elsewhere (a prefill worker),
  // in blocks taken from the pool as Engine::reserve does; nullptr when they do not fit.
  Sequence* import(std::vector<std::int32_t> toks, std::int64_t prompt_len, std::int64_t computed,
                   std::int64_t max_tokens = 1000) {
    if (device.num_available() < blocks_for(computed)) return nullptr;
    Sequence* s = make(std::move(toks), max_tokens);
    s->prompt_len = prompt_len;
    s->num_computed = computed;
    for (std::int64_t b = 0; b < blocks_for(computed); ++b) {
      s->blocks.push_back(*device.allocate());
      device_content[static_cast<size_t>(s->blocks.back())] =
          content_of(s->tokens, b, std::min(kBt, computed - b * kBt));
    }
    scheduler.add_running(s);
    return s;
  }

  std::int64_t host_available() const {
    if (!host) return 0;
    const auto st = host->stats();
    return st.free_blocks + st.cached_blocks;
  }
  StepPlan plan() { return scheduler.schedule(host_available()); }

  // Puts the KV of `toks`' full blocks into the host store as reusable cached blocks (what an
  // offload or a swap-out leaves behind): spilled from a zeroed buffer, published, released.
  void put_in_host(const std::vector<std::int32_t>& toks) {
    const auto hashes = kvstore::full_block_hashes(kSalt, toks, kBt);
    std::vector<BlockId> src(hashes.size(), 0);
    auto ids = host->spill(zeros.data(), src);
    ASSERT_TRUE(ids.is_ok()) << ids.status().to_string();
    for (size_t i = 0; i < ids->size(); ++i) {
      host->publish((*ids)[i], hashes[i]);
      host_content[static_cast<size_t>((*ids)[i])] = hashes[i];
    }
    host->release(*ids);
  }

  // Does what the engine does with a plan, checking its promises on the way.
  void run(const StepPlan& p) {
    // Swap-outs first: the blocks were released in the pool, their bytes are still there.
    for (const SwapOut& out : p.swap_outs) {
      EXPECT_EQ(out.seq->state, Sequence::State::kSwapped);
      EXPECT_EQ(static_cast<std::int64_t>(out.device_blocks.size()),
                blocks_for(out.seq->num_computed));
      auto ids = host->spill(zeros.data(), out.device_blocks);
      ASSERT_TRUE(ids.is_ok()) << "the plan swapped out more than the host store can take: "
                               << ids.status().to_string();
      out.seq->host_blocks = *ids;
      for (size_t i = 0; i < ids->size(); ++i) {
        host_content[static_cast<size_t>((*ids)[i])] =
            device_content[static_cast<size_t>(out.device_blocks[i])];
      }
      const std::int64_t full = std::min<std::int64_t>(
          {out.seq->num_computed / kBt, static_cast<std::int64_t>(out.seq->hashes.size()),
           static_cast<std::int64_t>(ids->size())});
      if (config.prefix_caching) {
        for (std::int64_t i = 0; i < full; ++i) {
          host->publish((*ids)[static_cast<size_t>(i)], out.seq->hashes[static_cast<size_t>(i)]);
        }
      }
      ++swap_outs;
    }
    for (Sequence* s : p.recomputed) {
      EXPECT_EQ(s->state, Sequence::State::kWaiting);
      EXPECT_EQ(s->num_computed, 0);
      EXPECT_TRUE(s->blocks.empty());
      ++recomputes;
    }
    // Restores: host -> device, then the host references are dropped.
    for (const Restore& r : p.restores) {
      EXPECT_EQ(r.host_blocks.size(), r.device_blocks.size());
      for (size_t i = 0; i < r.host_blocks.size(); ++i) {
        EXPECT_EQ(device.ref_count(r.device_blocks[i]), 1) << "a restore into a shared block";
        device_content[static_cast<size_t>(r.device_blocks[i])] =
            host_content[static_cast<size_t>(r.host_blocks[i])];
      }
      host->release(r.host_blocks);
      if (r.resume) ++resumes;
    }
    // The forward pass: every chunk attends to its own sequence's KV and writes only its own
    // blocks.
    std::int64_t total = 0;
    std::set<const Sequence*> seen;
    for (const ScheduledChunk& c : p.chunks) {
      Sequence* s = c.seq;
      EXPECT_TRUE(seen.insert(s).second) << "a sequence scheduled twice in one step";
      EXPECT_EQ(s->state, Sequence::State::kRunning);
      EXPECT_GE(c.num_tokens, 1);
      EXPECT_LE(c.num_tokens, s->remaining_to_compute());
      const std::int64_t end = s->num_computed + c.num_tokens;
      ASSERT_GE(static_cast<std::int64_t>(s->blocks.size()), blocks_for(end))
          << "a chunk without blocks";
      for (std::int64_t b = 0; b * kBt < s->num_computed; ++b) {
        const std::int64_t written = std::min(kBt, s->num_computed - b * kBt);
        EXPECT_EQ(device_content[static_cast<size_t>(s->blocks[static_cast<size_t>(b)])],
                  content_of(s->tokens, b, written))
            << "sequence " << s->id << " block " << b << " does not hold its KV";
      }
      for (std::int64_t b = s->num_computed / kBt; b < blocks_for(end); ++b) {
        const BlockId id = s->blocks[static_cast<size_t>(b)];
        EXPECT_EQ(device.ref_count(id), 1) << "a chunk writes a shared block";
        device_content[static_cast<size_t>(id)] =
            content_of(s->tokens, b, std::min(kBt, end - b * kBt));
      }
      s->num_computed = end;
      if (end == static_cast<std::int64_t>(s->tokens.size())) {
        s->tokens.push_back(static_cast<std::int32_t>(1000 + s->tokens.size()));  // "sampled"
      }
      scheduler.publish_full_blocks(s);
      if (config.prefix_caching) {
        // Its computed full blocks are indexed under its hashes: later prompts can reuse them.
        EXPECT_EQ(s->published_blocks,
                  std::min<std::int64_t>(s->num_computed / kBt,
                                         static_cast<std::int64_t>(s->blocks.size())));
        for (std::int64_t i = 0; i < s->published_blocks; ++i) {
          EXPECT_EQ(device.hash_of(s->blocks[static_cast<size_t>(i)]),
                    s->hashes[static_cast<size_t>(i)])
              << "sequence " << s->id << " block " << i << " is not published";
        }
      }
      total += c.num_tokens;
    }
    EXPECT_LE(total, config.max_batch_tokens);
  }
  StepPlan step() {
    StepPlan p = plan();
    run(p);
    return p;
  }

  // Offloads a finished sequence's full blocks to the host store, as the engine does (which
  // also skips blocks the store already holds; a duplicate here is published under a hash the
  // store already indexes, so it stays unindexed and is freed on release).
  void offload(Sequence* s) {
    if (!host || !config.prefix_caching) return;
    const std::int64_t full =
        std::min<std::int64_t>({s->num_computed / kBt, static_cast<std::int64_t>(s->hashes.size()),
                                static_cast<std::int64_t>(s->blocks.size())});
    std::vector<BlockId> src;
    std::vector<BlockHash> hashes;
    for (std::int64_t i = 0; i < full; ++i) {
      src.push_back(s->blocks[static_cast<size_t>(i)]);
      hashes.push_back(s->hashes[static_cast<size_t>(i)]);
    }
    if (src.empty()) return;
    auto ids = host->spill(zeros.data(), src);
    if (!ids.is_ok()) return;
    for (size_t i = 0; i < ids->size(); ++i) {
      host->publish((*ids)[i], hashes[i]);
      host_content[static_cast<size_t>((*ids)[i])] = device_content[static_cast<size_t>(src[i])];
    }
    host->release(*ids);
  }

  std::vector<Sequence*> live() const {
    std::vector<Sequence*> out;
    for (const auto& s : seqs) {
      if (s->state != Sequence::State::kFinished) out.push_back(s.get());
    }
    return out;
  }

  // Every device block's reference count equals the sequences holding it; host blocks are held
  // only by swapped sequences; each queue's size matches its sequences' states.
  void check_accounting() const {
    std::map<BlockId, std::int32_t> refs;
    std::int64_t host_held = 0, running = 0, waiting = 0, swapped = 0;
    for (const Sequence* s : live()) {
      for (BlockId b : s->blocks) ++refs[b];
      host_held += static_cast<std::int64_t>(s->host_blocks.size());
      switch (s->state) {
        case Sequence::State::kRunning:
          ++running;
          EXPECT_GE(static_cast<std::int64_t>(s->blocks.size()), blocks_for(s->num_computed));
          EXPECT_TRUE(s->host_blocks.empty());
          break;
        case Sequence::State::kWaiting:
          ++waiting;
          EXPECT_TRUE(s->blocks.empty()) << "a waiting sequence holds device blocks";
          EXPECT_TRUE(s->host_blocks.empty());
          EXPECT_EQ(s->num_computed, 0);
          break;
        case Sequence::State::kSwapped:
          ++swapped;
          EXPECT_TRUE(s->blocks.empty());
          EXPECT_EQ(static_cast<std::int64_t>(s->host_blocks.size()), blocks_for(s->num_computed));
          break;
        case Sequence::State::kFinished: break;
      }
    }
    for (BlockId b = 0; b < device.capacity(); ++b) {
      EXPECT_EQ(device.ref_count(b), refs.count(b) ? refs.at(b) : 0) << "device block " << b;
    }
    if (host) {
      EXPECT_EQ(host->stats().used_blocks, host_held);
    }
    EXPECT_EQ(scheduler.num_running(), running);
    EXPECT_EQ(scheduler.num_waiting(), waiting);
    EXPECT_EQ(scheduler.num_swapped(), swapped);
  }

  kvstore::BlockPool device;
  std::unique_ptr<kvstore::HostKvStore> host;
  SchedulerConfig config;
  Scheduler scheduler;
  std::vector<std::byte> zeros;  // what spills read: the tests model content separately
  std::vector<Content> device_content;
  std::vector<Content> host_content;
  std::vector<std::unique_ptr<Sequence>> seqs;
  std::uint64_t next_arrival = 0;
  RequestId next_id = 1;
  std::int64_t swap_outs = 0, recomputes = 0, resumes = 0;
};

SchedulerConfig cfg(std::int64_t budget, std::int64_t max_running = 256,
                    bool prefix_caching = true) {
  SchedulerConfig c;
  c.max_batch_tokens = budget;
  c.max_running = max_running;
  c.prefix_caching = prefix_caching;
  return c;
}

// (sequence, tokens) of each chunk, in plan order.
std::vector<std::pair<Sequence*, std::int64_t>> chunks(const StepPlan& p) {
  std::vector<std::pair<Sequence*, std::int64_t>> out;
  for (const ScheduledChunk& c : p.chunks) out.emplace_back(c.seq, c.num_tokens);
  return out;
}
using Chunks = std::vector<std::pair<Sequence*, std::int64_t>>;

// --- the token budget ------------------------------------------------------------------------

TEST(SchedulerBudget, RunningSequencesFirstInAdmissionOrderThenPrefillChunks) {
  Harness h(100, -1, cfg(10));
  Sequence* a = h.add(tokens(5));
  Sequence* b = h.add(tokens(5, 100));
  EXPECT_EQ(chunks(h.step()), (Chunks{{a, 5}, {b, 5}}));
  Sequence* c = h.add(tokens(20, 200));
  // Each decoding sequence takes one token; the new prompt gets the rest, in chunks.
  EXPECT_EQ(chunks(h.step()), (Chunks{{a, 1}, {b, 1}, {c, 8}}));
  EXPECT_EQ(c->state, Sequence::State::kRunning);
  EXPECT_EQ(chunks(h.step()), (Chunks{{a, 1}, {b, 1}, {c, 8}}));
  EXPECT_EQ(chunks(h.step()), (Chunks{{a, 1}, {b, 1}, {c, 4}}));
  EXPECT_EQ(c->generated(), 1);  // its prompt is done: it decodes now
  EXPECT_EQ(chunks(h.step()), (Chunks{{a, 1}, {b, 1}, {c, 1}}));
  h.check_accounting();
}

TEST(SchedulerBudget, AnExhaustedBudgetLeavesTheRestForTheNextStep) {
  Harness h(100, -1, cfg(4));
  Sequence* a = h.add(tokens(6));
  Sequence* b = h.add(tokens(6, 100));
  EXPECT_EQ(chunks(h.step()), (Chunks{{a, 4}}));  // b is not admitted: no budget left
  EXPECT_EQ(b->state, Sequence::State::kWaiting);
  EXPECT_EQ(chunks(h.step()), (Chunks{{a, 2}, {b, 2}}));
  EXPECT_EQ(chunks(h.step()), (Chunks{{a, 1}, {b, 3}}));  // b runs now: a chunk, not a re-admission
  EXPECT_EQ(chunks(h.step()), (Chunks{{a, 1}, {b, 1}}));
  EXPECT_TRUE(b->blocks.size() >= 2);
  h.check_accounting();
}

TEST(SchedulerBudget, MaxRunningBoundsAdmission) {
  Harness h(100, -1, cfg(64, 2));
  Sequence* a = h.add(tokens(4));
  Sequence* b = h.add(tokens(4, 100));
  Sequence* c = h.add(tokens(4, 200));
  EXPECT_EQ(chunks(h.step()), (Chunks{{a, 4}, {b, 4}}));
  EXPECT_EQ(chunks(h.step()), (Chunks{{a, 1}, {b, 1}}));
  EXPECT_EQ(h.scheduler.num_waiting(), 1);
  h.scheduler.remove(a);
  EXPECT_EQ(a->state, Sequence::State::kFinished);
  EXPECT_EQ(chunks(h.step()), (Chunks{{b, 1}, {c, 4}}));
  h.check_accounting();
}

// --- admission of waiting sequences ----------------------------------------------------------

TEST(SchedulerAdmission, WaitingSequencesAreAdmittedInOrderWhileTheirFirstChunkFits) {
  Harness h(4, -1, cfg(64, 256, false));
  Sequence* a = h.add(tokens(8));        // 2 blocks
  Sequence* b = h.add(tokens(12, 100));  // 3 blocks: only 2 left
  Sequence* c = h.add(tokens(4, 200));   // 1 block would fit, but b is first
  EXPECT_EQ(chunks(h.step()), (Chunks{{a, 8}}));
  EXPECT_EQ(b->state, Sequence::State::kWaiting);
  EXPECT_EQ(c->state, Sequence::State::kWaiting);
  EXPECT_TRUE(b->blocks.empty());
  h.check_accounting();
}

TEST(SchedulerAdmission, AChunkedPromptNeedsRoomForItsFirstChunkOnly) {
  Harness h(3, -1, cfg(4, 256, false));
  Sequence* a = h.add(tokens(10));  // 3 blocks in all; its first chunk of 4 needs 1
  EXPECT_EQ(chunks(h.step()), (Chunks{{a, 4}}));
  EXPECT_EQ(a->blocks.size(), 1u);
  EXPECT_EQ(chunks(h.step()), (Chunks{{a, 4}}));
  EXPECT_EQ(a->blocks.size(), 2u);
  h.check_accounting();
}

// --- preemption ------------------------------------------------------------------------------

// Three sequences of 8 prompt tokens fill 6 blocks; each then needs a third block to decode.
struct FullPool {
  explicit FullPool(std::int32_t host_blocks, bool prefix_caching = false)
      : h(6, host_blocks, cfg(64, 256, prefix_caching)) {
    a = h.add(tokens(8));
    b = h.add(tokens(8, 100));
    c = h.add(tokens(8, 200));
    EXPECT_EQ(chunks(h.step()), (Chunks{{a, 8}, {b, 8}, {c, 8}}));
    EXPECT_EQ(h.device.num_available(), 0);
  }
  Harness h;
  Sequence* a = nullptr;
  Sequence* b = nullptr;
  Sequence* c = nullptr;
};

TEST(SchedulerPreemption, WithoutAHostStoreTheLatestAdmittedIsRecomputed) {
  FullPool f(-1);
  const StepPlan p = f.h.step();
  EXPECT_EQ(chunks(p), (Chunks{{f.a, 1}, {f.b, 1}}));
  EXPECT_EQ(p.recomputed, std::vector<Sequence*>{f.c});
  EXPECT_TRUE(p.swap_outs.empty());
  EXPECT_EQ(f.c->state, Sequence::State::kWaiting);
  EXPECT_EQ(f.c->tokens.size(), 9u);  // its generated token stays: it is recomputed with it
  f.h.check_accounting();
  // Nothing is admitted in a step that preempted; once a finishes, c comes back whole.
  f.h.scheduler.remove(f.a);
  EXPECT_EQ(chunks(f.h.step()), (Chunks{{f.b, 1}, {f.c, 9}}));
  f.h.check_accounting();
}

TEST(SchedulerPreemption, TheLatestAdmittedIsSwappedOutWhenTheHostStoreHasRoom) {
  FullPool f(8);
  const std::vector<BlockId> c_blocks = f.c->blocks;
  const StepPlan p = f.h.step();
  EXPECT_EQ(chunks(p), (Chunks{{f.a, 1}, {f.b, 1}}));
  ASSERT_EQ(p.swap_outs.size(), 1u);
  EXPECT_EQ(p.swap_outs[0].seq, f.c);
  EXPECT_EQ(p.swap_outs[0].device_blocks, c_blocks);
  EXPECT_TRUE(p.recomputed.empty());
  EXPECT_EQ(f.c->state, Sequence::State::kSwapped);
  EXPECT_EQ(f.c->num_computed, 8);  // its KV is kept
  EXPECT_EQ(f.h.host->stats().used_blocks, 2);
  f.h.check_accounting();
}

TEST(SchedulerPreemption, TheHostStoreMustHoldAllTheVictimsBlocksElseItIsRecomputed) {
  FullPool f(1);  // room for 1 of c's 2 blocks
  const StepPlan p = f.h.step();
  EXPECT_TRUE(p.swap_outs.empty());
  EXPECT_EQ(p.recomputed, std::vector<Sequence*>{f.c});
  // The room is what the caller says is available now, not the store's capacity.
  FullPool g(8);
  const StepPlan q = g.h.scheduler.schedule(1);
  EXPECT_TRUE(q.swap_outs.empty());
  EXPECT_EQ(q.recomputed, std::vector<Sequence*>{g.c});
  g.h.run(q);
  g.h.check_accounting();
}

TEST(SchedulerPreemption, VictimsGoNewestFirstAndTheLastRunningOneCanBeItsOwnVictim) {
  // Four sequences in 8 blocks: a and b each need a third block, d frees two for them; then c
  // needs one and only itself is left to give.
  Harness h(8, 16, cfg(64, 256, false));
  Sequence* a = h.add(tokens(8));
  Sequence* b = h.add(tokens(8, 100));
  Sequence* c = h.add(tokens(8, 200));
  Sequence* d = h.add(tokens(8, 300));
  h.step();
  const StepPlan p = h.step();
  EXPECT_EQ(chunks(p), (Chunks{{a, 1}, {b, 1}}));
  ASSERT_EQ(p.swap_outs.size(), 2u);
  EXPECT_EQ(p.swap_outs[0].seq, d);
  EXPECT_EQ(p.swap_outs[1].seq, c);
  EXPECT_EQ(h.scheduler.num_swapped(), 2);
  h.check_accounting();
}

// --- resuming swapped sequences --------------------------------------------------------------

TEST(SchedulerResume, OldestFirstOnlyWhenAllItsBlocksFitAndBeforeAnyNewAdmission) {
  Harness h(8, 16, cfg(64, 256, false));
  Sequence* a = h.add(tokens(8));
  Sequence* b = h.add(tokens(8, 100));
  Sequence* c = h.add(tokens(8, 200));
  Sequence* d = h.add(tokens(8, 300));
  h.step();
  h.step();  // c and d swapped out (previous test)
  ASSERT_EQ(c->state, Sequence::State::kSwapped);
  ASSERT_EQ(d->state, Sequence::State::kSwapped);
  const std::vector<BlockId> c_host = c->host_blocks;
  Sequence* e = h.add(tokens(3, 400));  // one block: it would fit
  // 2 blocks free, c needs 3 (its 2 and one for the next token): nobody resumes, and e waits
  // behind the swapped sequences.
  EXPECT_EQ(h.device.num_available(), 2);
  StepPlan p = h.step();
  EXPECT_EQ(chunks(p), (Chunks{{a, 1}, {b, 1}}));
  EXPECT_TRUE(p.restores.empty());
  EXPECT_EQ(e->state, Sequence::State::kWaiting);

  h.scheduler.remove(a);  // 3 more blocks: 5 free. c resumes; d (3 more) does not; e waits.
  p = h.plan();
  EXPECT_EQ(chunks(p), (Chunks{{b, 1}, {c, 1}}));
  ASSERT_EQ(p.restores.size(), 1u);
  EXPECT_EQ(p.restores[0].seq, c);
  EXPECT_TRUE(p.restores[0].resume);
  EXPECT_EQ(p.restores[0].host_blocks, c_host);
  EXPECT_EQ(p.restores[0].device_blocks.size(), 2u);
  EXPECT_EQ(c->blocks.size(), 3u);
  EXPECT_EQ(c->state, Sequence::State::kRunning);
  EXPECT_EQ(d->state, Sequence::State::kSwapped);
  EXPECT_EQ(e->state, Sequence::State::kWaiting);
  h.run(p);
  h.check_accounting();

  h.scheduler.remove(b);  // d resumes, then e is admitted; the batch is in admission order
  p = h.step();
  EXPECT_EQ(chunks(p), (Chunks{{c, 1}, {d, 1}, {e, 3}}));
  EXPECT_EQ(h.scheduler.num_swapped(), 0);
  EXPECT_EQ(h.host->stats().used_blocks, 0);
  h.check_accounting();
}

// --- prefix reuse ----------------------------------------------------------------------------

TEST(SchedulerPrefix, DeviceBlocksOfAnEarlierSequenceAreShared) {
  Harness h(16, -1, cfg(64));
  Sequence* a = h.add(tokens(12));
  h.step();  // a's 3 full blocks are published
  Sequence* b = h.add(concat(tokens(8), tokens(5, 500)));
  const StepPlan p = h.step();
  EXPECT_EQ(chunks(p), (Chunks{{a, 1}, {b, 5}}));
  EXPECT_TRUE(p.restores.empty());
  EXPECT_EQ(std::vector<BlockId>(b->blocks.begin(), b->blocks.begin() + 2),
            std::vector<BlockId>(a->blocks.begin(), a->blocks.begin() + 2));
  EXPECT_EQ(h.device.ref_count(a->blocks[0]), 2);
  EXPECT_EQ(b->output.timings.prefix_hit_tokens, 8);
  // The same prompt again: all but its last block, since one token must be computed for logits.
  Sequence* c = h.add(tokens(12));
  EXPECT_EQ(chunks(h.step()), (Chunks{{a, 1}, {b, 1}, {c, 4}}));
  EXPECT_EQ(c->output.timings.prefix_hit_tokens, 8);
  h.check_accounting();
  // Blocks outlive their sequences as cache: a later prompt reuses them.
  h.scheduler.remove(a);
  h.scheduler.remove(b);
  h.scheduler.remove(c);
  EXPECT_EQ(h.device.num_used(), 0);
  Sequence* d = h.add(tokens(13));
  EXPECT_EQ(chunks(h.step()), (Chunks{{d, 1}}));
  EXPECT_EQ(d->output.timings.prefix_hit_tokens, 12);
  h.check_accounting();
}

TEST(SchedulerPrefix, WithoutPrefixCachingNothingIsShared) {
  Harness h(16, -1, cfg(64, 256, false));
  Sequence* a = h.add(tokens(12));
  h.step();
  Sequence* b = h.add(tokens(12));
  EXPECT_EQ(chunks(h.step()), (Chunks{{a, 1}, {b, 12}}));
  EXPECT_EQ(b->output.timings.prefix_hit_tokens, 0);
  h.check_accounting();
}

TEST(SchedulerPrefix, HostStoreBlocksAreRestoredThroughThePlan) {
  Harness h(16, 8, cfg(64));
  h.put_in_host(tokens(12));
  EXPECT_EQ(h.host->stats().cached_blocks, 3);
  Sequence* b = h.add(concat(tokens(12), tokens(3, 500)));
  const StepPlan p = h.plan();
  EXPECT_EQ(chunks(p), (Chunks{{b, 3}}));
  ASSERT_EQ(p.restores.size(), 1u);
  EXPECT_EQ(p.restores[0].seq, b);
  EXPECT_FALSE(p.restores[0].resume);
  EXPECT_EQ(p.restores[0].host_blocks.size(), 3u);
  EXPECT_EQ(p.restores[0].device_blocks,
            std::vector<BlockId>(b->blocks.begin(), b->blocks.begin() + 3));
  EXPECT_EQ(b->num_computed, 12);
  EXPECT_EQ(b->output.timings.host_prefix_hit_tokens, 12);
  EXPECT_EQ(h.host->stats().used_blocks, 3);  // held for the copy
  h.run(p);
  EXPECT_EQ(h.host->stats().used_blocks, 0);
  EXPECT_EQ(h.host->stats().cached_blocks, 3);
  h.check_accounting();
}

TEST(SchedulerPrefix, DeviceHitsFirstThenTheHostStore) {
  Harness h(16, 8, cfg(64));
  Sequence* a = h.add(concat(tokens(4), tokens(1, 500)));  // computes and publishes block 0
  h.step();
  h.put_in_host(tokens(12));  // blocks 0, 1 and 2
  Sequence* b = h.add(concat(tokens(12), tokens(3, 600)));
  const StepPlan p = h.plan();
  EXPECT_EQ(chunks(p), (Chunks{{a, 1}, {b, 3}}));
  EXPECT_EQ(b->blocks[0], a->blocks[0]);
  ASSERT_EQ(p.restores.size(), 1u);
  EXPECT_EQ(p.restores[0].host_blocks.size(), 2u);  // blocks 1 and 2
  EXPECT_EQ(b->output.timings.prefix_hit_tokens, 4);
  EXPECT_EQ(b->output.timings.host_prefix_hit_tokens, 8);
  h.run(p);
  h.check_accounting();
}

TEST(SchedulerPrefix, AMatchIsUndoneWhenTheRestDoesNotFit) {
  // 5 device blocks; a holds 2 (its first is the prompt's block 0). b's prompt is 20 tokens
  // (5 blocks): block 0 matches on device, 1 and 2 in the host store, and the last 2 do not fit.
  Harness h(5, 8, cfg(64));
  Sequence* a = h.add(concat(tokens(4), tokens(1, 500)));
  h.step();
  h.put_in_host(tokens(12));
  Sequence* b = h.add(concat(tokens(12), tokens(8, 600)));
  const auto host_before = h.host->stats();
  const StepPlan p = h.plan();
  EXPECT_EQ(chunks(p), (Chunks{{a, 1}}));
  EXPECT_TRUE(p.restores.empty());
  EXPECT_EQ(b->state, Sequence::State::kWaiting);
  EXPECT_TRUE(b->blocks.empty());
  EXPECT_EQ(b->num_computed, 0);
  EXPECT_EQ(b->output.timings.prefix_hit_tokens, 0);
  EXPECT_EQ(b->output.timings.host_prefix_hit_tokens, 0);
  EXPECT_EQ(h.device.ref_count(a->blocks[0]), 1);
  EXPECT_EQ(h.device.num_available(), 3);
  EXPECT_EQ(h.host->stats().used_blocks, 0);
  EXPECT_EQ(h.host->stats().cached_blocks, host_before.cached_blocks);
  h.run(p);
  h.check_accounting();
  // Once a is gone, b fits and gets the same hits.
  h.scheduler.remove(a);
  const StepPlan q = h.step();
  EXPECT_EQ(chunks(q), (Chunks{{b, 8}}));
  EXPECT_EQ(b->output.timings.prefix_hit_tokens, 4);
  EXPECT_EQ(b->output.timings.host_prefix_hit_tokens, 8);
  h.check_accounting();
}

// --- imported KV and removal -----------------------------------------------------------------

TEST(SchedulerImport, ImportedKvJoinsTheRunningBatchAndIsPreemptedLikeAnyOther) {
  Harness h(4, -1, cfg(64, 256, false));
  Sequence* a = h.add(tokens(8));
  h.step();  // a: 2 blocks, then needs a third
  // 4 prompt tokens computed elsewhere plus the first token: 1 block imported, 2 needed next.
  Sequence* imported = h.import(concat(tokens(4, 100), {7}), 4, 4);
  ASSERT_NE(imported, nullptr);
  EXPECT_EQ(imported->state, Sequence::State::kRunning);
  EXPECT_EQ(h.scheduler.num_running(), 2);
  EXPECT_EQ(h.scheduler.num_waiting(), 0);
  h.check_accounting();
  // One block left: a (older) takes it; the import, last in the batch, is its own victim.
  const StepPlan p = h.step();
  EXPECT_EQ(chunks(p), (Chunks{{a, 1}}));
  EXPECT_EQ(p.recomputed, std::vector<Sequence*>{imported});
  h.check_accounting();
  h.scheduler.remove(a);
  EXPECT_EQ(chunks(h.step()), (Chunks{{imported, 5}}));  // recomputed from its tokens
  h.check_accounting();
}

TEST(SchedulerImport, AnImportIsRunningAtOnceAndDecodesItsNextToken) {
  Harness h(16, -1, cfg(64));
  Sequence* imported = h.import(concat(tokens(8, 100), {7}), 8, 8);
  ASSERT_NE(imported, nullptr);
  EXPECT_EQ(chunks(h.step()), (Chunks{{imported, 1}}));
  EXPECT_EQ(imported->blocks.size(), 3u);
  h.check_accounting();
}

TEST(SchedulerRemove, ReleasesDeviceAndHostBlocksWhereverTheSequenceIs) {
  FullPool f(8, true);
  f.h.step();  // c swapped out
  ASSERT_EQ(f.c->state, Sequence::State::kSwapped);
  Sequence* w = f.h.add(tokens(4, 900));  // waiting
  f.h.check_accounting();
  EXPECT_GT(f.h.host->stats().used_blocks, 0);
  for (Sequence* s : {f.c, w, f.a, f.b}) {
    f.h.scheduler.remove(s);
    EXPECT_EQ(s->state, Sequence::State::kFinished);
    EXPECT_TRUE(s->blocks.empty());
    EXPECT_TRUE(s->host_blocks.empty());
    f.h.check_accounting();
  }
  EXPECT_TRUE(f.h.scheduler.idle());
  EXPECT_EQ(f.h.device.num_used(), 0);
  EXPECT_EQ(f.h.device.num_available(), 6);
  EXPECT_EQ(f.h.host->stats().used_blocks, 0);
  EXPECT_TRUE(f.h.plan().empty());
}

// --- a long random run -----------------------------------------------------------------------

TEST(SchedulerRandom, BlocksNeverLeakAndEverySequenceFinishesWithItsOwnKv) {
  const std::uint64_t seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + " (KVFLEET_TEST_SEED=" + std::to_string(seed) +
               " replays it)");
  std::mt19937_64 rng(seed);
  auto uniform = [&](std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  };
  // What the run exercised, over all rounds: each path must have been taken.
  std::int64_t swap_outs = 0, resumes = 0, recomputes = 0, device_hits = 0, host_hits = 0;
  for (int round = 0; round < 20; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const auto device_blocks = static_cast<std::int32_t>(uniform(6, 40));
    const auto host_blocks = static_cast<std::int32_t>(uniform(0, 3) == 0 ? -1 : uniform(2, 40));
    const std::int64_t budget = uniform(1, 48);
    const std::int64_t max_running = uniform(1, 8);
    const bool prefix_caching = uniform(0, 3) != 0;
    Harness h(device_blocks, host_blocks, cfg(budget, max_running, prefix_caching), 0.95, 0.8);
    // Prompts share prefixes of three bases, so prefixes are reused and evicted.
    const std::vector<std::vector<std::int32_t>> bases = {tokens(64, 0), tokens(64, 1000),
                                                          tokens(64, 2000)};
    auto random_prompt = [&](std::int64_t max_total, std::int64_t& max_tokens) {
      const std::int64_t total = uniform(2, max_total);
      const std::int64_t len = uniform(1, total - 1);
      max_tokens = total - len;
      const auto& base = bases[static_cast<size_t>(uniform(0, 2))];
      const std::int64_t shared = std::min<std::int64_t>(len, uniform(0, 20));
      std::vector<std::int32_t> p(base.begin(), base.begin() + shared);
      while (static_cast<std::int64_t>(p.size()) < len)
        p.push_back(static_cast<std::int32_t>(uniform(5000, 5100)));
      return p;
    };
    // A request fits the whole pool alone (the engine rejects others at submit).
    const std::int64_t max_total = std::min<std::int64_t>(device_blocks * kBt, 60);
    auto finish_done = [&] {
      for (Sequence* s : h.live()) {
        if (s->state == Sequence::State::kRunning && s->generated() >= s->params.max_tokens) {
          h.offload(s);
          h.scheduler.remove(s);
        }
      }
    };
    std::int64_t finished_steps = 0;
    for (int op = 0; op < 300; ++op) {
      const std::int64_t what = uniform(0, 9);
      if (what <= 2 && h.live().size() < 12) {
        std::int64_t max_tokens = 0;
        auto p = random_prompt(max_total, max_tokens);
        h.add(std::move(p), max_tokens);
      } else if (what == 3 && h.live().size() < 12) {
        // An import: a prompt whose KV (and first token) computed elsewhere.
        std::int64_t max_tokens = 0;
        auto p = random_prompt(max_total, max_tokens);
        const auto prompt_len = static_cast<std::int64_t>(p.size());
        p.push_back(7);
        h.import(std::move(p), prompt_len, prompt_len, max_tokens);
      } else if (what == 4 && !h.live().empty()) {
        const auto all = h.live();
        h.scheduler.remove(
            all[static_cast<size_t>(uniform(0, static_cast<std::int64_t>(all.size()) - 1))]);
      } else if (!h.scheduler.idle()) {
        const StepPlan p = h.step();
        ASSERT_FALSE(p.empty() && p.recomputed.empty()) << "a step with work left planned nothing";
        finish_done();
        ++finished_steps;
      }
      h.check_accounting();
      if (testing::Test::HasFailure()) return;
    }
    // Everything left finishes.
    int steps = 0;
    while (!h.scheduler.idle() && steps++ < 10000) {
      const StepPlan p = h.step();
      ASSERT_FALSE(p.empty() && p.recomputed.empty()) << "a step with work left planned nothing";
      finish_done();
      h.check_accounting();
      if (testing::Test::HasFailure()) return;
    }
    EXPECT_TRUE(h.scheduler.idle()) << "sequences still queued after 10000 steps";
    EXPECT_EQ(h.device.num_used(), 0);
    if (h.host) {
      EXPECT_EQ(h.host->stats().used_blocks, 0);
    }
    EXPECT_GT(finished_steps, 0);
    swap_outs += h.swap_outs;
    resumes += h.resumes;
    recomputes += h.recomputes;
    for (const auto& s : h.seqs) {
      device_hits += s->output.timings.prefix_hit_tokens;
      host_hits += s->output.timings.host_prefix_hit_tokens;
    }
  }
  SCOPED_TRACE("swap-outs " + std::to_string(swap_outs) + ", resumes " + std::to_string(resumes) +
               ", recomputations " + std::to_string(recomputes) + ", prefix tokens from device " +
               std::to_string(device_hits) + ", from host " + std::to_string(host_hits));
  EXPECT_GT(swap_outs, 0);
  EXPECT_GT(resumes, 0);
  EXPECT_GT(recomputes, 0);
  EXPECT_GT(device_hits, 0);
  EXPECT_GT(host_hits, 0);
}

}  // namespace
}  // namespace kvfleet::worker
