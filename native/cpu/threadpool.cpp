// A persistent worker pool for run_parallel (native builds only; the wasm
// build has its own serial run_parallel in wasm/runtime.cpp).
//
// One parallel region runs at a time (a mutex serialises callers, e.g. two
// models forwarding on two libuv threads); a region started from inside one
// (a task that calls a parallel op) runs serially on its thread, as in the
// wasm pool, instead of waiting for the region it is part of. Threads spin briefly before they
// sleep (spin_until below). Work is handed out in chunks of
// `grain` indices claimed one at a time (ThreadPool below), so uneven tasks
// balance themselves and the caller finishes what a descheduled worker has
// not started.
// The calling thread works too, so a pool of N threads has N-1 workers.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
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

int default_threads();

// How long a thread spins, and then yields, before it sleeps: a worker
// waiting for the next region, the caller waiting for the chunks workers
// still run. A forward runs a few hundred regions, most a fraction of a
// millisecond apart; a futex sleep costs a wake-up of tens of microseconds
// (more in a VM). Spinning is kept short because on a machine where another
// process wants the core, a spinner takes time slices away from real work
// (ours or theirs). A worker then yields for a while, handing the core to
// whoever wants it while still answering the next region quickly on a quiet
// machine; the caller does not yield: it has the region's result to deliver,
// and a yield on a loaded core can cost it a whole time slice, so it sleeps
// and the last chunk's finisher wakes it. Bounded in time, not iterations,
// so a loaded machine (where a spinner loses its slice) and a CPU with a
// slow `pause` both get the same budget.
int env_us(const char* name, int fallback) {
  const char* env = getenv(name);  // tuning knobs for benchmarks
  return (env ? atoi(env) : fallback) * 1000;
}
int spin_budget_ns() {
  static const int ns = env_us("MARBLE_POOL_SPIN_US", 30);
  return ns;
}
bool adaptive() {
  static const bool on = !getenv("MARBLE_POOL_ADAPT") || atoi(getenv("MARBLE_POOL_ADAPT")) != 0;  // 0: no backoff (benchmarks)
  return on;
}
int yield_budget_ns() {
  static const int ns = env_us("MARBLE_POOL_YIELD_US", 200);
  return ns;
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spins (then yields, if `yield`) until done() or the budgets are spent;
// returns done()'s last value.
template <typename F>
bool spin_until(F&& done, bool yield) {
  const int budget = spin_budget_ns();
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() - start > std::chrono::nanoseconds(budget)) break;
  }
  if (!yield) return done();
  const int yield_budget = budget + yield_budget_ns();
  for (;;) {
    std::this_thread::yield();
    if (done()) return true;
    if (std::chrono::steady_clock::now() - start > std::chrono::nanoseconds(yield_budget)) return done();
  }
}

// Set while this thread works on a region's tasks (caller and workers alike).
thread_local bool t_in_region = false;
// Depth of SerialScopes on this thread: its regions run on it alone.
thread_local int t_serial = 0;

// A parallel region hands out its chunks through one 64-bit word: the
// region's generation in the high half, the chunks nobody has claimed yet in
// the low half. A thread claims a chunk by decrementing the word with a CAS
// that also checks the generation, so a worker that wakes late (descheduled
// by the OS, or still finishing its sleep) can neither take a chunk from a
// later region nor hold up this one: the caller never waits for a worker to
// arrive, only for chunks already claimed to finish, and runs every chunk
// itself when no worker shows up. After a successful claim the region cannot
// end before that chunk is done, so its task (fn_, ctx_, n_, grain_) stays put
// while the claimer reads it.
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
    const uint32_t start = generation_;
    for (int i = 0; i < threads - 1; ++i) workers_.emplace_back([this, start] { worker_loop(start); });
  }

  void run(int n, int grain, TaskFn fn, void* ctx) {
    // Another region running (a second model forwarding on another libuv
    // thread) means the cores are taken: run on this thread rather than wait.
    if (workers_.empty() || n <= grain || t_in_region || t_serial || !region_mutex_.try_lock()) {
      fn(ctx, 0, n);
      return;
    }
    std::lock_guard<std::mutex> region(region_mutex_, std::adopt_lock);
    const auto now = Clock::now();
    if (now < serial_until_) {
      fn(ctx, 0, n);
      return;
    }
    fn_ = fn;
    ctx_ = ctx;
    n_ = n;
    grain_ = grain;
    chunks_ = (n + grain - 1) / grain;
    done_.store(0, std::memory_order_relaxed);
    const uint32_t gen = ++generation_;
    // The seq_cst store publishes the stores above. A worker about to sleep
    // counts itself in sleepers_ and then re-checks the word under mutex_, so
    // either it sees this store or we see it and wake it.
    word_.store((uint64_t)gen << 32 | (uint32_t)chunks_, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      { std::lock_guard<std::mutex> lock(mutex_); }
      wake_.notify_all();
    }
    const Clock::duration mine = work(gen);
    const int chunks = chunks_;
    if (done_.load(std::memory_order_acquire) == chunks) return;
    const auto idle = Clock::now();
    if (!spin_until([&] { return done_.load(std::memory_order_acquire) == chunks; }, false)) {
      std::unique_lock<std::mutex> lock(mutex_);
      caller_sleeping_.store(true, std::memory_order_seq_cst);
      done_cv_.wait(lock, [&] { return done_.load(std::memory_order_seq_cst) == chunks; });
      caller_sleeping_.store(false, std::memory_order_relaxed);
    }
    if (adaptive()) adapt(Clock::now() - idle, mine);
  }

 private:
  using Clock = std::chrono::steady_clock;

  // Contention backoff. With every chunk claimed, the caller waits only for
  // chunks that workers are running; that takes at most about one chunk's
  // time, unless the OS took the worker's core mid-chunk (another process
  // wants it), and then the caller waits for the worker's next time slice,
  // a millisecond or more. When a wait is longer than 1 ms and than twice the
  // caller's own work in the region (chunks can be uneven, so one worker
  // chunk may outlast all of the caller's), and other threads are waiting
  // for a core (others_want_cores), regions run on the caller alone
  // for a while (the workers go to sleep and leave the core to whoever wants
  // it); the pause doubles while regions keep stalling (1 ms up to 64 ms) and
  // halves after each that does not, so a busy machine costs about the
  // single-thread time and a quiet one loses nothing.
  void adapt(Clock::duration waited, Clock::duration caller_work) {
    if (waited > std::chrono::milliseconds(1) && waited > 2 * caller_work && others_want_cores()) {
      // One stall alone (the host pausing this VM's vCPU, an interrupt
      // storm) is not contention: back off on the second within 50 ms.
      const auto now = Clock::now();
      const bool again = now - last_stall_ < std::chrono::milliseconds(50);
      last_stall_ = now;
      if (!again) return;
      backoff_us_ = backoff_us_ ? (backoff_us_ < 64000 ? 2 * backoff_us_ : backoff_us_) : 1000;
      serial_until_ = Clock::now() + std::chrono::microseconds(backoff_us_);
    } else {
      backoff_us_ /= 2;
    }
  }

  // Whether the stall just seen was another process taking a core, rather
  // than the hypervisor pausing this VM's other vCPU: on Linux, more threads
  // runnable right now (/proc/loadavg's fourth field) than there are cores.
  // Under a hypervisor that holds a vCPU back for a while, the worker's
  // chunks stall too, with no process to yield to, and going serial only
  // loses the second core: MNIST training at batch 64, alternating pairs of
  // 30 steps, mean 479 ms with the serial stretches against 453 without
  // (steps over 520 ms: 33 against 5 of 120). Read only after a stall, so a
  // quiet machine never pays for it. Elsewhere: assume a process.
  static bool others_want_cores() {
#if defined(__linux__)
    FILE* f = fopen("/proc/loadavg", "r");
    if (!f) return true;
    double avg[3];
    int running = 0, total = 0;
    const int got = fscanf(f, "%lf %lf %lf %d/%d", &avg[0], &avg[1], &avg[2], &running, &total);
    fclose(f);
    if (got != 5) return true;
    return running > default_threads();
#else
    return true;
#endif
  }

  // Claims and runs chunks of region `gen` until none is left; returns the
  // time spent in them (only the caller's is used).
  Clock::duration work(uint32_t gen) {
    Clock::duration total{0};
    t_in_region = true;
    uint64_t word = word_.load(std::memory_order_acquire);
    while ((uint32_t)(word >> 32) == gen && (uint32_t)word != 0) {
      if (!word_.compare_exchange_weak(word, word - 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
      const int chunks = chunks_;
      const int begin = (chunks - (int)(uint32_t)word) * grain_;
      const auto start = Clock::now();
      fn_(ctx_, begin, begin + grain_ < n_ ? begin + grain_ : n_);
      total += Clock::now() - start;
      // Past this increment the region may end and the caller reuse every
      // field, so `chunks` was read before it.
      if (done_.fetch_add(1, std::memory_order_seq_cst) + 1 == chunks &&
          caller_sleeping_.load(std::memory_order_seq_cst)) {
        { std::lock_guard<std::mutex> lock(mutex_); }
        done_cv_.notify_one();
      }
      word = word_.load(std::memory_order_acquire);
    }
    t_in_region = false;
    return total;
  }

  void worker_loop(uint32_t seen) {
    for (;;) {
      auto started = [&] { return (uint32_t)(word_.load(std::memory_order_acquire) >> 32) != seen; };
      if (!spin_until(started, true)) {
        std::unique_lock<std::mutex> lock(mutex_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        wake_.wait(lock, [&] { return (uint32_t)(word_.load(std::memory_order_seq_cst) >> 32) != seen; });
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
      }
      if (stopping_.load()) return;
      seen = (uint32_t)(word_.load(std::memory_order_acquire) >> 32);
      work(seen);
    }
  }

  void stop_workers() {
    stopping_.store(true);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      word_.store((uint64_t)++generation_ << 32, std::memory_order_seq_cst);
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex region_mutex_;  // one region at a time
  std::mutex mutex_;         // only for sleeping and waking
  std::condition_variable wake_, done_cv_;
  std::atomic<bool> stopping_{false};
  uint32_t generation_ = 0;              // the last region's (written under region_mutex_)
  std::atomic<uint64_t> word_{0};        // generation << 32 | chunks not yet claimed
  std::atomic<int> done_{0};             // chunks of the current region finished
  std::atomic<int> sleepers_{0};         // workers asleep (or about to be) on wake_
  std::atomic<bool> caller_sleeping_{false};  // the caller is asleep (or about to be) on done_cv_
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int n_ = 0, grain_ = 1, chunks_ = 0;
  Clock::time_point serial_until_{};  // regions run on the caller until then (adapt)
  int backoff_us_ = 0;
  Clock::time_point last_stall_{};
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
void serial_scope_enter() { ++t_serial; }
void serial_scope_leave() { --t_serial; }
int num_threads() { return pool().size(); }
void set_num_threads(int n) {
  if (n < 1) n = default_threads();
  if (n != pool().size()) pool().resize(n);
}

}  // namespace mb
