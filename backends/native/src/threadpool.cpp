#include "threadpool.h"

#include <algorithm>

#include "cpu.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KILN_PAUSE() _mm_pause()
#else
#define KILN_PAUSE() std::this_thread::yield()
#endif

namespace kiln {

namespace {
// Spin iterations (a pause each, tens of cycles) before blocking: on the order of 20-50 us.
constexpr int kSpin = 2000;
// One chunk per thread, as many kernels size their work for; a chunk a late worker has not
// claimed is run by the caller instead.
constexpr size_t kChunksPerThread = 1;
}  // namespace

ThreadPool::ThreadPool(size_t threads) {
  if (threads == 0) threads = std::max<size_t>(1, std::thread::hardware_concurrency());
  for (size_t i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_chunks(uint32_t generation) {
  const std::function<void(size_t, size_t)>* task;
  size_t n, chunk, chunks;
  const PlanIsa* isa;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (generation_.load(std::memory_order_relaxed) != generation) return;
    task = task_;
    isa = task_isa_;
    n = task_n_;
    chunk = task_chunk_;
    chunks = task_chunks_;
  }
  PlanIsaScope scope(isa);
  uint64_t state = claim_.load(std::memory_order_acquire);
  for (;;) {
    if (static_cast<uint32_t>(state >> 32) != generation) return;
    const size_t index = static_cast<size_t>(state & 0xffffffffu);
    if (index >= chunks) return;
    if (!claim_.compare_exchange_weak(state, state + 1, std::memory_order_acq_rel,
                                      std::memory_order_acquire))
      continue;
    const size_t begin = index * chunk, end = std::min(n, begin + chunk);
    (*task)(begin, end);
    if (finished_.fetch_add(1, std::memory_order_acq_rel) + 1 == chunks) {
      std::lock_guard<std::mutex> lock(mutex_);
      done_.notify_one();
    }
    state = claim_.load(std::memory_order_acquire);
  }
}

void ThreadPool::worker_loop() {
  uint32_t seen = 0;
  for (;;) {
    for (int i = 0; i < kSpin && generation_.load(std::memory_order_acquire) == seen &&
                    !stop_.load(std::memory_order_relaxed);
         ++i)
      KILN_PAUSE();
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || generation_.load() != seen; });
      if (stop_) return;
      seen = generation_.load();
    }
    run_chunks(seen);
  }
}

void ThreadPool::parallel_for(size_t n, size_t grain,
                              const std::function<void(size_t, size_t)>& fn) {
  if (n == 0) return;
  grain = std::max<size_t>(1, grain);
  const size_t most = (n + grain - 1) / grain;  // chunks of at least `grain`
  if (std::min(size(), most) <= 1) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mutex_);
  const size_t chunks_wanted = std::min(most, size() * kChunksPerThread);
  const size_t chunk = (n + chunks_wanted - 1) / chunks_wanted;
  const size_t chunks = (n + chunk - 1) / chunk;
  uint32_t generation;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    task_ = &fn;
    task_isa_ = current_plan_isa();
    task_n_ = n;
    task_chunk_ = chunk;
    task_chunks_ = chunks;
    finished_.store(0, std::memory_order_relaxed);
    generation = generation_.load(std::memory_order_relaxed) + 1;
    claim_.store(static_cast<uint64_t>(generation) << 32, std::memory_order_release);
    generation_.store(generation, std::memory_order_release);
  }
  wake_.notify_all();
  run_chunks(generation);
  // Only chunks a worker has claimed are outstanding: wait for those to finish.
  for (int i = 0; i < kSpin && finished_.load(std::memory_order_acquire) != chunks; ++i)
    KILN_PAUSE();
  if (finished_.load(std::memory_order_acquire) != chunks) {
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return finished_.load() == chunks; });
  }
  std::lock_guard<std::mutex> lock(mutex_);
  task_ = nullptr;
}

}  // namespace kiln
