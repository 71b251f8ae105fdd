// A small fork-join thread pool: parallel_for splits [0, n) into chunks that the calling
// thread and the workers claim one at a time, then waits for the claimed ones. Chunk i
// belongs to thread i (the caller is 0), which claims it first, so each thread keeps
// working on the part of the data it wrote in the op before; a thread with its own chunks
// done takes any left. The caller never waits for a worker that has not started: on a busy
// or virtualized machine a sleeping worker can take tens of microseconds to wake, and the
// caller simply takes its chunks.
//
// Waking is paid once per inference, not once per op: a run holds an `Engaged` scope, which
// wakes sleeping workers as it opens (while the caller starts on the first ops) and keeps
// them spinning between the run's parallel_for calls (up to a bound, so a long serial
// stretch or an oversubscribed machine does not burn a core). Outside a scope, workers spin
// for a few microseconds after a call, then sleep on a condition variable, so an idle pool
// never holds a core away from another engine between requests.
//
// Workers are kept off the caller's CPU (Linux): at each Engaged scope and, with one run in
// flight, at each call, since after an idle gap the scheduler stacks a woken thread on its
// waker's CPU. A caller waiting for claimed chunks spins, then yields, bounded in time, before
// it blocks: a blocked caller's wake-up is where it tends to land on a worker's CPU.
//
// Small work is not split: parallel_for takes the call's total work (a cost estimate in
// roughly flop-sized units) and gives each thread at least kMinChunkWork of it; work too
// small for two chunks runs on the caller without touching the workers.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace kiln {

struct PlanIsa;

class ThreadPool {
 public:
  // Work units a chunk must carry to be worth handing to another thread (a few microseconds
  // of one core: a hand-over costs on the order of a microsecond when the worker spins).
  static constexpr size_t kMinChunkWork = size_t(1) << 15;

  // threads: total threads including the caller; 0 means every hardware thread.
  explicit ThreadPool(size_t threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  size_t size() const { return workers_.size() + 1; }

  // Calls fn(begin, end) on disjoint chunks covering [0, n); chunks are at least `grain`
  // items and, when `work` (the whole call's cost estimate; 0 = unknown) is given, at least
  // kMinChunkWork units each. Safe to call from several threads: calls are serialized.
  // Must not be called from inside fn (no nesting).
  void parallel_for(size_t n, size_t grain, const std::function<void(size_t, size_t)>& fn,
                    size_t work = 0);

  // Chunks parallel_for would use for n items, `grain` and `work` (1 = run on the caller).
  size_t chunks_for(size_t n, size_t grain, size_t work) const;

  // parallel_for calls so far that handed chunks to the workers (not run on the caller alone).
  uint64_t split_calls() const { return split_calls_.load(std::memory_order_relaxed); }

  // Wakes the workers and keeps them spinning between calls while it lives; nests and may
  // be held by several threads at once.
  class Engaged {
   public:
    explicit Engaged(ThreadPool* pool);
    ~Engaged();
    Engaged(const Engaged&) = delete;
    Engaged& operator=(const Engaged&) = delete;

   private:
    ThreadPool* pool_;
  };

 private:
  void worker_loop(size_t self);
  // Claims and runs chunks of call `generation` until none are left: thread `self`'s own
  // first (0 is the caller, workers count from 1), then any other still unclaimed.
  void run_chunks(uint32_t generation, size_t self);
  void wake_sleepers();
  // Keeps the workers off the CPU the calling thread runs on (Linux; a no-op elsewhere);
  // called with mutex_ held, a vDSO read when the caller has not moved.
  void place_workers_away_from_caller();

  std::vector<std::thread> workers_;
  std::mutex call_mutex_;  // one parallel_for at a time
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  // The current call, published under mutex_ before generation_ moves.
  const std::function<void(size_t, size_t)>* task_ = nullptr;
  const PlanIsa* task_isa_ = nullptr;  // the caller's plan ISA, set on the workers too
  size_t task_n_ = 0, task_chunk_ = 0, task_chunks_ = 0;
  std::atomic<uint32_t> generation_{0};
  // One per chunk, each on its own cache line: (generation << 1) | claimed. A call opens its
  // chunks' slots with its generation; a worker that wakes after its call ended expects an
  // older one and claims nothing.
  struct alignas(64) Slot {
    std::atomic<uint64_t> state{1};
  };
  std::unique_ptr<Slot[]> slots_;
  std::atomic<size_t> finished_{0};  // chunks of the current call that have run
  std::atomic<uint64_t> split_calls_{0};
  std::atomic<int> engaged_{0};      // open Engaged scopes: workers spin instead of sleeping
  std::atomic<int> sleepers_{0};     // workers blocked on wake_ (changed under mutex_)
  uint64_t wake_ticket_ = 0;         // moved (under mutex_) by each Engaged: wakes sleepers
  std::atomic<bool> stop_{false};
  // CPUs the process may run on, and the caller's CPU the workers were last moved away from
  // (-1: never); changed under mutex_ by an Engaged scope.
  std::vector<int> allowed_cpus_;
  int placed_away_from_ = -1;
};

}  // namespace kiln
