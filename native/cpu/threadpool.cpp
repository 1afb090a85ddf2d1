// A persistent worker pool for run_parallel (native builds only; the wasm
// build has its own serial run_parallel in wasm/runtime.cpp).
//
// One parallel region runs at a time (a mutex serialises callers, e.g. two
// models forwarding on two libuv threads). Work is handed out in chunks of
// `grain` indices from an atomic counter, so uneven tasks balance themselves.
// The calling thread works too, so a pool of N threads has N-1 workers.
#include <atomic>
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

class ThreadPool {
 public:
  explicit ThreadPool(int threads) { resize(threads); }
  ~ThreadPool() { stop_workers(); }

  int size() const { return (int)workers_.size() + 1; }

  void resize(int threads) {
    std::lock_guard<std::mutex> region(region_mutex_);
    stop_workers();
    if (threads < 1) threads = 1;
    stopping_ = false;
    for (int i = 0; i < threads - 1; ++i) workers_.emplace_back([this] { worker_loop(); });
  }

  void run(int n, int grain, TaskFn fn, void* ctx) {
    if (workers_.empty() || n <= grain) {
      fn(ctx, 0, n);
      return;
    }
    std::lock_guard<std::mutex> region(region_mutex_);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fn_ = fn;
      ctx_ = ctx;
      n_ = n;
      grain_ = grain;
      next_.store(0);
      active_ = (int)workers_.size();
      ++generation_;
    }
    wake_.notify_all();
    work();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return active_ == 0; });
  }

 private:
  void work() {
    for (;;) {
      int begin = next_.fetch_add(grain_);
      if (begin >= n_) break;
      int end = begin + grain_ < n_ ? begin + grain_ : n_;
      fn_(ctx_, begin, end);
    }
  }

  void worker_loop() {
    unsigned long long seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
      }
      work();
      std::lock_guard<std::mutex> lock(mutex_);
      if (--active_ == 0) done_.notify_one();
    }
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex region_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  bool stopping_ = false;
  unsigned long long generation_ = 0;
  int active_ = 0;
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
