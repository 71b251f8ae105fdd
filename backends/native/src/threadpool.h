// A small fork-join thread pool: parallel_for splits [0, n) into chunks that the calling
// thread and the workers claim one at a time, then waits for the claimed ones. The caller
// never waits for a worker that has not started: on a busy or virtualized machine a sleeping
// worker can take tens of microseconds to wake, and the caller simply takes its chunks.
// Between calls the workers spin for a few microseconds (a network's next layer usually
// follows at once), then sleep on a condition variable, so a pool never holds the second
// core away from another engine between runs.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kiln {

struct PlanIsa;

class ThreadPool {
 public:
  // threads: total threads including the caller; 0 means every hardware thread.
  explicit ThreadPool(size_t threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  size_t size() const { return workers_.size() + 1; }

  // Calls fn(begin, end) on disjoint chunks covering [0, n); chunks are at least `grain`.
  // Safe to call from several threads: calls are serialized. Must not be called from
  // inside fn (no nesting).
  void parallel_for(size_t n, size_t grain, const std::function<void(size_t, size_t)>& fn);

 private:
  void worker_loop();
  // Claims and runs chunks of call `generation` until none are left.
  void run_chunks(uint32_t generation);

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
  // (generation << 32) | next unclaimed chunk: a worker that wakes after its call ended sees
  // another generation and claims nothing.
  std::atomic<uint64_t> claim_{0};
  std::atomic<size_t> finished_{0};  // chunks of the current call that have run
  std::atomic<bool> stop_{false};
};

}  // namespace kiln
