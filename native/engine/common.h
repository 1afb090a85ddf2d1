// Shared basics for the engine and the CPU ops.
//
// This code is compiled twice: natively (g++, with libc and threads) and for
// wasm32 freestanding (clang, no libc, no libc++). So it uses no STL and no
// exceptions: memory comes from mb_alloc/mb_free, errors are status codes, and
// the few math functions it needs come from mathf.h.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace mb {

// Memory: malloc/free natively, the wasm runtime's allocator in wasm. Both are
// 64-byte aligned so SIMD loads never straddle a cache line by accident.
void* mb_alloc(size_t bytes);
void mb_free(void* ptr);
void mb_copy(void* dst, const void* src, size_t bytes);
void mb_zero(void* dst, size_t bytes);
// Hands freed heap memory back to the OS where the allocator keeps it (glibc);
// a no-op elsewhere (wasm linear memory never shrinks).
void mb_return_free_memory();

inline int imin(int a, int b) { return a < b ? a : b; }
inline int imax(int a, int b) { return a > b ? a : b; }
inline size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

// Status codes returned through the C ABI; the message is kept in a per-model
// buffer (see api.h).
enum Status : int {
  kOk = 0,
  kErrInvalidArgument = 1,
  kErrOutOfMemory = 2,
  kErrUnsupported = 3,
  kErrState = 4,
};

// A tiny growable array for the engine's bookkeeping (parameter table, layer
// lists). Trivially-copyable element types only; this is not std::vector.
template <typename T>
struct Vec {
  T* data = nullptr;
  int size = 0;
  int capacity = 0;

  bool push(const T& value) {
    if (size == capacity) {
      int next = capacity ? capacity * 2 : 16;
      T* grown = static_cast<T*>(mb_alloc(sizeof(T) * (size_t)next));
      if (!grown) return false;
      if (data) {
        mb_copy(grown, data, sizeof(T) * (size_t)size);
        mb_free(data);
      }
      data = grown;
      capacity = next;
    }
    data[size++] = value;
    return true;
  }
  T& operator[](int i) { return data[i]; }
  const T& operator[](int i) const { return data[i]; }
  void release() {
    mb_free(data);
    data = nullptr;
    size = capacity = 0;
  }
};

// parallel_for(n, fn): calls fn(i) for i in [0, n), split across the worker
// pool natively and serially in wasm. The callable is type-erased through a
// plain function pointer so that no std::function is needed.
using TaskFn = void (*)(void* ctx, int begin, int end);
void run_parallel(int n, int grain, TaskFn fn, void* ctx);
int num_threads();
void set_num_threads(int n);

// While a SerialScope with `serial` set lives, the parallel loops its thread
// starts run on that thread alone. Ops wrap themselves in one when their
// work is too small to repay handing chunks to another core (waking it,
// moving the data to its cache: tens of microseconds in all), which also
// keeps a small op off a core another process may be using. Chunks are
// split by index as always, so results do not change.
void serial_scope_enter();
void serial_scope_leave();
struct SerialScope {
  bool serial;
  explicit SerialScope(bool serial_) : serial(serial_) {
    if (serial) serial_scope_enter();
  }
  ~SerialScope() {
    if (serial) serial_scope_leave();
  }
  SerialScope(const SerialScope&) = delete;
  SerialScope& operator=(const SerialScope&) = delete;
};

template <typename F>
inline void parallel_for(int n, int grain, F&& body) {
  struct Thunk {
    static void call(void* ctx, int begin, int end) {
      F& f = *static_cast<F*>(ctx);
      for (int i = begin; i < end; ++i) f(i);
    }
  };
  if (n <= 0) return;
  run_parallel(n, grain < 1 ? 1 : grain, &Thunk::call, (void*)&body);
}

// Like parallel_for but the body gets a whole [begin, end) range, for loops
// that keep per-range state (accumulators, scratch).
template <typename F>
inline void parallel_ranges(int n, int grain, F&& body) {
  struct Thunk {
    static void call(void* ctx, int begin, int end) { (*static_cast<F*>(ctx))(begin, end); }
  };
  if (n <= 0) return;
  run_parallel(n, grain < 1 ? 1 : grain, &Thunk::call, (void*)&body);
}

// Runs body(slot, item) for every item in [0, n) on up to `slots` threads,
// each taking the next item when it finishes one (a slow or descheduled
// thread simply takes fewer); `slot` (< slots) names the calling thread's
// own scratch. Which slot runs an item varies from run to run, so results
// must not depend on it.
template <typename F>
inline void parallel_items(int slots, int n, F&& body) {
  int next = 0;
  parallel_for(slots, 1, [&](int slot) {
    for (;;) {
      const int item = __atomic_fetch_add(&next, 1, __ATOMIC_RELAXED);
      if (item >= n) break;
      body(slot, item);
    }
  });
}

}  // namespace mb
