#include "threadpool.h"

#include <algorithm>
#include <chrono>

#include "cpu.h"

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

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
// Inside an Engaged run a worker keeps polling this much longer before sleeping: long enough
// to span the serial ops between two parallel ones, bounded so that a run with a long serial
// stretch does not hold a core for nothing. Past kSpin it yields between polls, so on a
// machine with more runnable threads than cores the caller (or another process) gets the core.
constexpr int kEngagedSpin = 10 * kSpin;
// A caller waiting for the chunks workers claimed spins (pause) this long, then yields its
// core (a descheduled worker, or another process, can run) until kJoinYield has passed, and
// only then blocks. Blocking halts the caller's vCPU, and the wake-up may put the caller on
// a worker's CPU; counted in iterations the wait was ~22 us of pauses + 200 yields (~35 us
// on an idle 2-vCPU VM), shorter than the imbalance of two chunks after an idle gap.
constexpr std::chrono::microseconds kJoinSpin{50};
constexpr std::chrono::microseconds kJoinYield{1000};
// One chunk per thread, as many kernels size their work for; a chunk a late worker has not
// claimed is run by the caller instead.
constexpr size_t kChunksPerThread = 1;
}  // namespace

ThreadPool::ThreadPool(size_t threads) {
  if (threads == 0) threads = std::max<size_t>(1, std::thread::hardware_concurrency());
  slots_.reset(new Slot[threads * kChunksPerThread]);
  for (size_t i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) allowed_cpus_.push_back(c);
#endif
}

// After an idle gap the scheduler may wake a worker onto the CPU of the thread that woke it
// and leave it there for many milliseconds: both then share one core and a two-thread run
// takes one-thread time. Measured on a 2-vCPU VM, a 1x1 conv of 110 MFLOP after 100 ms idle:
// 1.5 ms for a dozen runs in a row with the workers unplaced, 0.85 ms once placed. So once per
// run (an Engaged scope), when the caller sits on a CPU the workers were not yet kept off,
// they are allowed every CPU of the process but that one. The caller itself is never pinned.
void ThreadPool::place_workers_away_from_caller() {
#if defined(__linux__)
  if (workers_.empty() || allowed_cpus_.size() < 2) return;
  const int cpu = sched_getcpu();
  if (cpu < 0 || cpu == placed_away_from_) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : allowed_cpus_)
    if (c != cpu) CPU_SET(c, &set);
  for (auto& t : workers_) pthread_setaffinity_np(t.native_handle(), sizeof(set), &set);
  placed_away_from_ = cpu;
#endif
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

ThreadPool::Engaged::Engaged(ThreadPool* pool) : pool_(pool && pool->size() > 1 ? pool : nullptr) {
  if (!pool_) return;
  {
    std::lock_guard<std::mutex> lock(pool_->mutex_);
    pool_->engaged_.fetch_add(1, std::memory_order_relaxed);
    ++pool_->wake_ticket_;
    pool_->place_workers_away_from_caller();
  }
  pool_->wake_sleepers();
}

ThreadPool::Engaged::~Engaged() {
  if (pool_) pool_->engaged_.fetch_sub(1, std::memory_order_relaxed);
}

void ThreadPool::wake_sleepers() {
  // A worker counts itself a sleeper under mutex_ before it checks its wake condition, and
  // every change to that condition is made under mutex_: reading the count afterwards
  // cannot miss a worker that is about to block.
  if (sleepers_.load(std::memory_order_seq_cst) > 0) wake_.notify_all();
}

void ThreadPool::run_chunks(uint32_t generation, size_t self) {
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
  // This thread's own chunks first (self, self + size(), ...), then whatever is left. Owning
  // chunk i, a thread works on the same part of each op's data as in the op before (the part
  // it wrote), rather than whichever part it claimed first: a 2-thread chain of elementwise
  // ops on 256 KB went 5.2 -> 3.7 us an op with the two vCPUs far apart (a 300 ns cache-line
  // round trip), and whole models 0.91-0.99x in such phases, even when they are close.
  const uint64_t open = static_cast<uint64_t>(generation) << 1;
  auto claim_and_run = [&](size_t index) {
    uint64_t expected = open;
    if (!slots_[index].state.compare_exchange_strong(expected, open | 1,
                                                     std::memory_order_acq_rel))
      return;
    const size_t begin = index * chunk, end = std::min(n, begin + chunk);
    (*task)(begin, end);
    if (finished_.fetch_add(1, std::memory_order_acq_rel) + 1 == chunks) {
      std::lock_guard<std::mutex> lock(mutex_);
      done_.notify_one();
    }
  };
  for (size_t index = self; index < chunks; index += size()) claim_and_run(index);
  for (size_t index = 0; index < chunks; ++index) claim_and_run(index);
}

void ThreadPool::worker_loop(size_t self) {
  uint32_t seen = 0;
  for (;;) {
    int idle = 0;
    for (;;) {
      if (stop_.load(std::memory_order_relaxed)) return;
      const uint32_t g = generation_.load(std::memory_order_acquire);
      if (g != seen) {
        seen = g;
        break;
      }
      const int limit = engaged_.load(std::memory_order_relaxed) > 0 ? kEngagedSpin : kSpin;
      if (++idle > kSpin && idle < limit) {
        std::this_thread::yield();
        continue;
      }
      if (idle >= limit) {
        std::unique_lock<std::mutex> lock(mutex_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        const uint64_t ticket = wake_ticket_;
        wake_.wait(lock, [&] {
          return stop_ || generation_.load() != seen || wake_ticket_ != ticket;
        });
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
        idle = 0;
        continue;
      }
      KILN_PAUSE();
    }
    run_chunks(seen, self);
  }
}

size_t ThreadPool::chunks_for(size_t n, size_t grain, size_t work) const {
  grain = std::max<size_t>(1, grain);
  size_t most = (n + grain - 1) / grain;  // chunks of at least `grain`
  if (work) most = std::min(most, std::max<size_t>(1, work / kMinChunkWork));
  return std::min(most, size() * kChunksPerThread);
}

void ThreadPool::parallel_for(size_t n, size_t grain,
                              const std::function<void(size_t, size_t)>& fn, size_t work) {
  if (n == 0) return;
  const size_t chunks_wanted = chunks_for(n, grain, work);
  if (chunks_wanted <= 1) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mutex_);
  split_calls_.fetch_add(1, std::memory_order_relaxed);
  const size_t chunk = (n + chunks_wanted - 1) / chunks_wanted;
  const size_t chunks = (n + chunk - 1) / chunk;
  uint32_t generation;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    // The caller may have moved during the run: a join it slept in woke it on a worker's
    // CPU (measured on the 2-vCPU VM: 16 of 100 runs after idle gaps, 2 of 100 back to back),
    // and the two then share that CPU for the rest of the run. Each call checks (a vDSO
    // read) and moves the workers away again. Only for a single run in flight: with several,
    // each caller would move them on every call.
    if (engaged_.load(std::memory_order_relaxed) == 1) place_workers_away_from_caller();
    task_ = &fn;
    task_isa_ = current_plan_isa();
    task_n_ = n;
    task_chunk_ = chunk;
    task_chunks_ = chunks;
    finished_.store(0, std::memory_order_relaxed);
    generation = generation_.load(std::memory_order_relaxed) + 1;
    for (size_t c = 0; c < chunks; ++c)
      slots_[c].state.store(static_cast<uint64_t>(generation) << 1, std::memory_order_relaxed);
    generation_.store(generation, std::memory_order_release);
  }
  wake_sleepers();
  run_chunks(generation, 0);
  // Only chunks a worker has claimed are outstanding: wait for those to finish.
  auto pending = [&] { return finished_.load(std::memory_order_acquire) != chunks; };
  if (pending()) {
    const auto start = std::chrono::steady_clock::now();
    auto waited = [&] { return std::chrono::steady_clock::now() - start; };
    while (pending() && waited() < kJoinSpin)
      for (int i = 0; i < 64 && pending(); ++i) KILN_PAUSE();
    while (pending() && waited() < kJoinYield) std::this_thread::yield();
  }
  if (pending()) {
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return finished_.load() == chunks; });
  }
  std::lock_guard<std::mutex> lock(mutex_);
  task_ = nullptr;
}

}  // namespace kiln
