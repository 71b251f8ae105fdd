// How far apart two CPUs are: one thread pinned to each passes a cache line back and forth;
// prints the mean round trip. On the 2-vCPU cloud VM this was measured on, the two vCPUs are
// either close (50-60 ns) or far apart (320-350 ns), which decides how well two threads
// working on the same tensors scale (README, "Where the light zoo's 2-thread swing comes from").
//   g++ -O2 -pthread benchmarks/micro/vcpu_round_trip.cpp -o /tmp/rt && /tmp/rt [cpu_a cpu_b]
#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

namespace {

void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

alignas(64) std::atomic<int> line{0};

}  // namespace

int main(int argc, char** argv) {
  const int a = argc > 2 ? std::atoi(argv[1]) : 0, b = argc > 2 ? std::atoi(argv[2]) : 1;
  constexpr int kTrips = 200000;
  std::thread other([&] {
    pin(b);
    for (int i = 0; i < kTrips; ++i) {
      while (line.load(std::memory_order_acquire) != 2 * i + 1) {
      }
      line.store(2 * i + 2, std::memory_order_release);
    }
  });
  pin(a);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kTrips; ++i) {
    line.store(2 * i + 1, std::memory_order_release);
    while (line.load(std::memory_order_acquire) != 2 * i + 2) {
    }
  }
  const auto end = std::chrono::steady_clock::now();
  other.join();
  std::printf("cpu %d <-> cpu %d: round trip %.1f ns\n", a, b,
              std::chrono::duration<double, std::nano>(end - start).count() / kTrips);
}
