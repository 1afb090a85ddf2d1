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
// atomics in place of mutexes: the caller publishes the task, stores the
// region's word (generation << 32 | chunks not yet claimed), bumps
// `generation` and wakes the workers; everybody claims chunks of `grain`
// indices by a CAS on the word that also checks the generation, so a worker
// that arrives late (descheduled, or still waking) can neither take a chunk
// of a later region nor hold this one up: the caller waits only for chunks
// already claimed to finish, and runs them all itself if no worker comes.
// One region runs at a time; a region started while another runs (another
// instance's call, or a nested parallel_for) runs serially on its caller
// instead of waiting, so no two instances ever block each other.
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
  int done;        // chunks of the current region finished; the caller waits on it
  uint64_t word;   // generation << 32 | chunks not yet claimed
  int n, grain, chunks;
  TaskFn fn;
  void* ctx;
  int workers;          // workers taking part in regions (set once they are all ready)
  int ready;            // workers that have entered mb_pool_worker_run
  int busy;             // 1 while a region runs
  int stopping;         // set with the last generation bump: workers return
  int failed;           // a worker trapped: its share of a region was not done
  int caller_may_wait;  // 0 where the region's caller must not block (a browser's main thread)
  int serial;           // SerialScopes alive: regions run on their caller
  int worker_chunks;    // chunks run by workers since the start (tests check the pool really works)
  int spins;            // how long workers spin for the next region before they sleep (adapt_spins)
  int window_regions, window_solo;  // adapt_spins' count since it last decided
};

Pool pool;

// Spins before sleeping: a region ends within microseconds of the last chunk,
// and a wait/notify round trip costs tens of microseconds, which over the few
// hundred regions of a forward would add up. But a spinner takes the core
// from whoever else runs on it (wasm has no yield), so the workers' spin is
// long only while they keep up (adapt_spins).
//
// The caller waiting for a region's last chunks: a worker's chunk ends within
// tens of microseconds on a quiet machine, and a caller asleep would pay the
// notify round trip on top of every such wait; it only spins while it has
// nothing else to do. Embedded model, 2 threads, batch 1, against 2^11:
// minimum 9.41-9.74 -> 9.06-9.09 ms; with a core busy 0.91-1.04x the
// 1-thread time.
constexpr int kCallerSpins = 1 << 16;
// Workers between regions: the engine runs its small ops alone for tens of
// microseconds (wasm's take about three times native's), and a worker asleep
// by then comes late to the next region, so they spin kLongSpins; but a
// worker always spinning is a thread always runnable, and with another
// process on one of two cores that made a batch-1 forward 1.24-1.29x the
// 1-thread time. Which case holds is told by the regions the caller ran
// alone (the worker asleep or its core taken): per forward of 102 regions,
// quiet 2 / 5-6 (long / short spins), one core busy 46-48 / 42. With both
// spins long when quiet: 8.15-8.29 ms median against 8.68-8.79.
constexpr int kSpins = 1 << 11;
constexpr int kLongSpins = 1 << 16;
constexpr int kAdaptWindow = 64;  // regions per decision

// Called by the region's caller after each region (one at a time: pool.busy).
void adapt_spins(bool solo) {
  pool.window_solo += solo;
  if (++pool.window_regions < kAdaptWindow) return;
  // Over a quarter alone: short spins; under an eighth: long; between: as is.
  if (4 * pool.window_solo > kAdaptWindow) __atomic_store_n(&pool.spins, kSpins, __ATOMIC_RELAXED);
  else if (8 * pool.window_solo < kAdaptWindow) __atomic_store_n(&pool.spins, kLongSpins, __ATOMIC_RELAXED);
  pool.window_regions = pool.window_solo = 0;
}

int load(const int* p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }

// Claims and runs chunks of region `generation` until none is left; returns
// the number of chunks this thread ran. After a successful claim the region
// cannot end before that chunk is done, so the task fields stay put.
int work(uint32_t generation) {
  int chunks = 0;
  uint64_t word = __atomic_load_n(&pool.word, __ATOMIC_ACQUIRE);
  while ((uint32_t)(word >> 32) == generation && (uint32_t)word != 0) {
    if (!__atomic_compare_exchange_n(&pool.word, &word, word - 1, true, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) continue;
    const int total = pool.chunks, grain = pool.grain, n = pool.n;
    const int begin = (total - (int)(uint32_t)word) * grain;
    pool.fn(pool.ctx, begin, begin + grain < n ? begin + grain : n);
    ++chunks;
    // Past this increment the region may end and its fields be reused: `total` was read before.
    // Always notified, not only when the caller is known to wait: a
    // caller_waiting flag set before the wait lost wake-ups here (a hang, seen
    // in testing), and this is one notify per region, by whoever ends it.
    if (__atomic_add_fetch(&pool.done, 1, __ATOMIC_SEQ_CST) == total) __builtin_wasm_memory_atomic_notify(&pool.done, 1);
    word = __atomic_load_n(&pool.word, __ATOMIC_ACQUIRE);
  }
  return chunks;
}

}  // namespace

void serial_scope_enter() { __atomic_add_fetch(&pool.serial, 1, __ATOMIC_RELAXED); }
void serial_scope_leave() { __atomic_sub_fetch(&pool.serial, 1, __ATOMIC_RELAXED); }

void run_parallel(int n, int grain, TaskFn fn, void* ctx) {
  const int workers = load(&pool.workers);
  int expected = 0;
  // pool.serial is shared by every instance (no thread-locals in this build):
  // while one thread's small op runs, another's regions run serially too,
  // which only costs time, and only when two instances call at once.
  if (workers == 0 || n <= grain || load(&pool.failed) || __atomic_load_n(&pool.serial, __ATOMIC_RELAXED) ||
      !__atomic_compare_exchange_n(&pool.busy, &expected, 1, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
    fn(ctx, 0, n);
    return;
  }
  pool.fn = fn;
  pool.ctx = ctx;
  pool.n = n;
  pool.grain = grain;
  const int chunks = (n + grain - 1) / grain;
  pool.chunks = chunks;
  __atomic_store_n(&pool.done, 0, __ATOMIC_RELAXED);
  const int generation = load(&pool.generation) + 1;
  __atomic_store_n(&pool.word, (uint64_t)(uint32_t)generation << 32 | (uint32_t)chunks, __ATOMIC_SEQ_CST);
  __atomic_store_n(&pool.generation, generation, __ATOMIC_SEQ_CST);  // publishes the stores above
  __builtin_wasm_memory_atomic_notify(&pool.generation, (unsigned)workers);
  const int mine = work((uint32_t)generation);
  for (int spins = 0;; ++spins) {
    const int done = load(&pool.done);
    if (done == chunks) break;
    if (spins >= kCallerSpins && load(&pool.caller_may_wait)) __builtin_wasm_memory_atomic_wait32(&pool.done, done, -1);
  }
  adapt_spins(mine == chunks);
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
    const int limit = __atomic_load_n(&pool.spins, __ATOMIC_RELAXED);
    for (int spins = 0;; ++spins) {
      generation = mb::load(&pool.generation);
      if (generation != seen) break;
      if (spins >= limit) __builtin_wasm_memory_atomic_wait32(&pool.generation, seen, -1);
    }
    seen = generation;
    if (mb::load(&pool.stopping)) break;
    const int chunks = mb::work((uint32_t)generation);
    if (chunks) __atomic_add_fetch(&pool.worker_chunks, chunks, __ATOMIC_RELAXED);
  }
  __atomic_sub_fetch(&pool.ready, 1, __ATOMIC_SEQ_CST);
}

// Workers that have entered mb_pool_worker_run (the starter polls this).
MB_EXPORT int mb_pool_ready() { return mb::load(&pool.ready); }

// Lets `workers` ready workers take part in regions. Call only when no
// region runs and exactly that many workers are ready.
MB_EXPORT void mb_pool_start(int workers, int caller_may_wait) {
  __atomic_store_n(&pool.spins, mb::kSpins, __ATOMIC_SEQ_CST);
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
// thread): count the chunk it was running as finished so that the caller
// wakes, and make every later region serial. The region's result is
// incomplete, so the caller's side checks mb_pool_failed() after each call
// and reports it.
MB_EXPORT void mb_pool_worker_failed() {
  __atomic_store_n(&pool.failed, 1, __ATOMIC_SEQ_CST);
  __atomic_add_fetch(&pool.done, 1, __ATOMIC_SEQ_CST);
  __builtin_wasm_memory_atomic_notify(&pool.done, 1);
}

// Any thread trapped (the region's caller, the engine thread): locks may be
// held and a region half done, so every thread's later calls are refused.
MB_EXPORT void mb_pool_mark_failed() { __atomic_store_n(&pool.failed, 1, __ATOMIC_SEQ_CST); }

MB_EXPORT int mb_pool_failed() { return mb::load(&pool.failed); }

MB_EXPORT int mb_pool_worker_chunks() { return mb::load(&pool.worker_chunks); }
