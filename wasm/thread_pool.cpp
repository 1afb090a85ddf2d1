// run_parallel for the threaded wasm build (wasm/dist/marble-threads.wasm).
//
// The module imports one shared memory; every thread (a worker_thread in
// Node, a Web Worker in browsers) instantiates the same module on it. Globals
// such as __stack_pointer are per instance, everything in linear memory (this
// pool, the heap, the models) is shared. A pool worker is an instance whose
// thread called mb_pool_worker_run(): it never returns from it until the pool
// stops, sleeping in memory.atomic.wait32 between parallel regions.
//
// The protocol is the native pool's (native/cpu/threadpool.cpp) with wasm
// atomics in place of mutexes: the caller publishes the task, bumps
// `generation` and wakes the workers; everybody takes chunks of `grain`
// indices from `next`; each worker decrements `active` when no chunk is left,
// and the caller returns once `active` is 0. One region runs at a time; a
// region started while another runs (another instance's call, or a nested
// parallel_for) runs serially on its caller instead of waiting, so no two
// instances ever block each other.
//
// Results never depend on the number of threads: the engine splits work by
// index, never by thread, and reductions are summed in index order.
#include <stddef.h>
#include <stdint.h>

#include "../native/engine/common.h"

#if !MB_WASM_THREADS
#error "thread_pool.cpp is for the threaded build (-DMB_WASM_THREADS=1 -matomics)"
#endif

#define MB_EXPORT extern "C" __attribute__((visibility("default")))

namespace mb {
namespace {

struct Pool {
  int generation;  // bumped to start a region (and to stop); workers wait on it
  int active;      // workers still inside the current region; the caller waits on it
  int next;        // first index not yet handed out
  int n, grain;
  TaskFn fn;
  void* ctx;
  int workers;          // workers taking part in regions (set once they are all ready)
  int ready;            // workers that have entered mb_pool_worker_run
  int busy;             // 1 while a region runs
  int stopping;         // set with the last generation bump: workers return
  int failed;           // a worker trapped: its share of a region was not done
  int caller_may_wait;  // 0 where the region's caller must not block (a browser's main thread)
  int worker_chunks;    // chunks run by workers since the start (tests check the pool really works)
};

Pool pool;

// Spins before sleeping: a region ends within microseconds of the last chunk,
// and a futex round trip costs tens of microseconds, which over the few
// hundred regions of a forward would add up. Kept short because spinning
// steals the core from whoever else runs on it.
constexpr int kSpins = 1 << 12;

int load(const int* p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }

// Returns the number of chunks this thread ran.
int work() {
  const int n = pool.n, grain = pool.grain;
  const TaskFn fn = pool.fn;
  void* ctx = pool.ctx;
  int chunks = 0;
  for (;; ++chunks) {
    const int begin = __atomic_fetch_add(&pool.next, grain, __ATOMIC_RELAXED);
    if (begin >= n) break;
    fn(ctx, begin, begin + grain < n ? begin + grain : n);
  }
  return chunks;
}

void finish_share() {
  if (__atomic_sub_fetch(&pool.active, 1, __ATOMIC_SEQ_CST) == 0)
    __builtin_wasm_memory_atomic_notify(&pool.active, 1);
}

}  // namespace

void run_parallel(int n, int grain, TaskFn fn, void* ctx) {
  const int workers = load(&pool.workers);
  int expected = 0;
  if (workers == 0 || n <= grain || load(&pool.failed) ||
      !__atomic_compare_exchange_n(&pool.busy, &expected, 1, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
    fn(ctx, 0, n);
    return;
  }
  pool.fn = fn;
  pool.ctx = ctx;
  pool.n = n;
  pool.grain = grain;
  __atomic_store_n(&pool.next, 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&pool.active, workers, __ATOMIC_SEQ_CST);
  __atomic_add_fetch(&pool.generation, 1, __ATOMIC_SEQ_CST);  // publishes the stores above
  __builtin_wasm_memory_atomic_notify(&pool.generation, (unsigned)workers);
  work();
  for (int spins = 0;; ++spins) {
    const int active = load(&pool.active);
    if (active == 0) break;
    if (spins >= kSpins && load(&pool.caller_may_wait))
      __builtin_wasm_memory_atomic_wait32(&pool.active, active, -1);
  }
  __atomic_store_n(&pool.busy, 0, __ATOMIC_RELEASE);
}

int num_threads() { return load(&pool.workers) + 1; }

// The pool's size is set from JavaScript (mb_pool_start), which owns the workers.
void set_num_threads(int) {}

}  // namespace mb

using mb::pool;

// A pool worker's whole life: announce itself, then take part in every region
// until mb_pool_stop. Called by the worker thread right after it set its own
// stack (see wasm/build.sh: __stack_pointer is exported).
MB_EXPORT void mb_pool_worker_run() {
  int seen = mb::load(&pool.generation);
  __atomic_add_fetch(&pool.ready, 1, __ATOMIC_SEQ_CST);
  __builtin_wasm_memory_atomic_notify(&pool.ready, 1);
  for (;;) {
    int generation;
    for (int spins = 0;; ++spins) {
      generation = mb::load(&pool.generation);
      if (generation != seen) break;
      if (spins >= mb::kSpins) __builtin_wasm_memory_atomic_wait32(&pool.generation, seen, -1);
    }
    seen = generation;
    if (mb::load(&pool.stopping)) break;
    const int chunks = mb::work();
    if (chunks) __atomic_add_fetch(&pool.worker_chunks, chunks, __ATOMIC_RELAXED);
    mb::finish_share();
  }
  __atomic_sub_fetch(&pool.ready, 1, __ATOMIC_SEQ_CST);
}

// Workers that have entered mb_pool_worker_run (the starter polls this).
MB_EXPORT int mb_pool_ready() { return mb::load(&pool.ready); }

// Lets `workers` ready workers take part in regions. Call only when no
// region runs and exactly that many workers are ready.
MB_EXPORT void mb_pool_start(int workers, int caller_may_wait) {
  __atomic_store_n(&pool.caller_may_wait, caller_may_wait, __ATOMIC_SEQ_CST);
  __atomic_store_n(&pool.workers, workers, __ATOMIC_SEQ_CST);
}

// Sends every worker out of mb_pool_worker_run. Call only when no region runs.
MB_EXPORT void mb_pool_stop() {
  __atomic_store_n(&pool.workers, 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&pool.stopping, 1, __ATOMIC_SEQ_CST);
  __atomic_add_fetch(&pool.generation, 1, __ATOMIC_SEQ_CST);
  __builtin_wasm_memory_atomic_notify(&pool.generation, 0xffffffffu);
}

// A worker trapped inside a region (JS caught the RuntimeError on its
// thread): count its share as finished so that the caller wakes, and make
// every later region serial. The region's result is incomplete, so the
// caller's side checks mb_pool_failed() after each call and reports it.
MB_EXPORT void mb_pool_worker_failed() {
  __atomic_store_n(&pool.failed, 1, __ATOMIC_SEQ_CST);
  mb::finish_share();
}

// Any thread trapped (the region's caller, the engine thread): locks may be
// held and a region half done, so every thread's later calls are refused.
MB_EXPORT void mb_pool_mark_failed() { __atomic_store_n(&pool.failed, 1, __ATOMIC_SEQ_CST); }

MB_EXPORT int mb_pool_failed() { return mb::load(&pool.failed); }

MB_EXPORT int mb_pool_worker_chunks() { return mb::load(&pool.worker_chunks); }
