// A persistent worker pool for run_parallel (native builds only; the wasm
// build has its own serial run_parallel in wasm/runtime.cpp).
//
// One parallel region runs at a time (a mutex serialises callers, e.g. two
// models forwarding on two libuv threads); a region started from inside one
// (a task that calls a parallel op) runs serially on its thread, as in the
// wasm pool, instead of waiting for the region it is part of. Threads spin briefly before they
// sleep (spin_until below). Work is handed out in chunks of
// `grain` indices from an atomic counter, so uneven tasks balance themselves.
// The calling thread works too, so a pool of N threads has N-1 workers.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <mutex>
#include <thread>
#include <vector>

#include "../engine/common.h"

namespace mb {

void* mb_alloc(size_t bytes) {
  void* p = nullptr;
  if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) return nullptr;
  return p;
}
void mb_free(void* ptr) { free(ptr); }
void mb_copy(void* dst, const void* src, size_t bytes) { memcpy(dst, src, bytes); }
void mb_zero(void* dst, size_t bytes) { memset(dst, 0, bytes); }
void mb_return_free_memory() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

namespace {

// How long a thread spins before it sleeps, both a worker waiting for the
// next region and the caller waiting for the workers to finish one. A
// forward runs a few hundred regions, most a fraction of a millisecond apart;
// a futex sleep costs a wake-up of tens of microseconds (more in a VM), and
// a worker that wakes late leaves its share to the caller. Bounded in time,
// not iterations, so a loaded machine (where a spinner loses its slice) and a
// CPU with a slow `pause` both get the same budget.
int spin_budget_ns() {
  static const int ns = [] {
    const char* env = getenv("MARBLE_POOL_SPIN_US");  // tuning knob for benchmarks
    return env ? atoi(env) * 1000 : 100 * 1000;
  }();
  return ns;
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spins until done() or the budget is spent; returns done()'s last value.
template <typename F>
bool spin_until(F&& done) {
  const int budget = spin_budget_ns();
  if (budget <= 0) return done();
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() - start > std::chrono::nanoseconds(budget)) return done();
  }
}

// Set while this thread works on a region's tasks (caller and workers alike).
thread_local bool t_in_region = false;

class ThreadPool {
 public:
  explicit ThreadPool(int threads) { resize(threads); }
  ~ThreadPool() { stop_workers(); }

  int size() const { return (int)workers_.size() + 1; }

  void resize(int threads) {
    std::lock_guard<std::mutex> region(region_mutex_);
    stop_workers();
    if (threads < 1) threads = 1;
    stopping_.store(false);
    // A new worker starts from the current generation: the first region may
    // begin before the thread first runs.
    const unsigned long long start = generation_.load();
    for (int i = 0; i < threads - 1; ++i) workers_.emplace_back([this, start] { worker_loop(start); });
  }

  void run(int n, int grain, TaskFn fn, void* ctx) {
    if (workers_.empty() || n <= grain || t_in_region) {
      fn(ctx, 0, n);
      return;
    }
    std::lock_guard<std::mutex> region(region_mutex_);
    fn_ = fn;
    ctx_ = ctx;
    n_ = n;
    grain_ = grain;
    next_.store(0, std::memory_order_relaxed);
    active_.store((int)workers_.size(), std::memory_order_relaxed);
    // The seq_cst bump publishes the stores above. A worker about to sleep
    // counts itself in sleepers_ and then re-checks generation_ under
    // mutex_, so either it sees this bump or we see it and wake it.
    generation_.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      { std::lock_guard<std::mutex> lock(mutex_); }
      wake_.notify_all();
    }
    work();
    if (!spin_until([this] { return active_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock<std::mutex> lock(mutex_);
      caller_sleeping_.store(true, std::memory_order_seq_cst);
      done_.wait(lock, [this] { return active_.load(std::memory_order_seq_cst) == 0; });
      caller_sleeping_.store(false, std::memory_order_relaxed);
    }
  }

 private:
  void work() {
    t_in_region = true;
    for (;;) {
      int begin = next_.fetch_add(grain_);
      if (begin >= n_) break;
      int end = begin + grain_ < n_ ? begin + grain_ : n_;
      fn_(ctx_, begin, end);
    }
    t_in_region = false;
  }

  void worker_loop(unsigned long long seen) {
    for (;;) {
      auto started = [&] { return generation_.load(std::memory_order_acquire) != seen; };
      if (!spin_until(started)) {
        std::unique_lock<std::mutex> lock(mutex_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_seq_cst) != seen; });
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
      }
      seen = generation_.load(std::memory_order_acquire);
      if (stopping_.load()) return;
      work();
      // The same handshake as above, for the caller's sleep on done_.
      if (active_.fetch_sub(1, std::memory_order_seq_cst) == 1 && caller_sleeping_.load(std::memory_order_seq_cst)) {
        { std::lock_guard<std::mutex> lock(mutex_); }
        done_.notify_one();
      }
    }
  }

  void stop_workers() {
    stopping_.store(true);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      generation_.fetch_add(1);
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex region_mutex_;  // one region at a time
  std::mutex mutex_;         // only for sleeping and waking
  std::condition_variable wake_, done_;
  std::atomic<bool> stopping_{false};
  std::atomic<unsigned long long> generation_{0};  // bumped to start a region (and to stop)
  std::atomic<int> active_{0};                     // workers still inside the current region
  std::atomic<int> sleepers_{0};                   // workers asleep (or about to be) on wake_
  std::atomic<bool> caller_sleeping_{false};       // the caller is asleep (or about to be) on done_
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int n_ = 0, grain_ = 1;
  std::atomic<int> next_{0};
};

int default_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n ? (int)n : 1;
}

ThreadPool& pool() {
  static ThreadPool instance(default_threads());
  return instance;
}

}  // namespace

void run_parallel(int n, int grain, TaskFn fn, void* ctx) { pool().run(n, grain, fn, ctx); }
int num_threads() { return pool().size(); }
void set_num_threads(int n) {
  if (n < 1) n = default_threads();
  if (n != pool().size()) pool().resize(n);
}

}  // namespace mb
