// The little runtime the engine needs in a freestanding wasm32 module: memory
// (a first-fit allocator over linear memory, growing it on demand), memcpy
// and friends, operator new/delete, and a serial run_parallel. No imports,
// so the module instantiates in browsers, Deno, workerd and Node alike.
//
// The threaded build (MB_WASM_THREADS, wasm/build.sh) compiles this file too:
// there the memory is shared by several instances on several threads, so the
// allocator takes a lock, and run_parallel comes from wasm/thread_pool.cpp.
#include <stddef.h>
#include <stdint.h>

#include "../native/engine/common.h"

extern "C" unsigned char __heap_base;

namespace {

// Every block starts with a 64-byte header so payloads stay 64-byte aligned.
// Blocks tile the heap in address order; `prev_size` lets free() merge with
// the block before, `size` with the block after.
struct Header {
  size_t size;       // bytes, header included
  size_t prev_size;  // size of the block before (0 for the first)
  size_t free;
  size_t pad[13];
};
static_assert(sizeof(Header) == 64, "header keeps payloads aligned");

constexpr size_t kAlign = 64;
constexpr uint64_t kPage = 65536;
// The largest single allocation: linear memory is at most 4 GiB (wasm32), and
// a block's size (payload + header) must fit in 32 bits. A training arena
// past 2 GiB (cifar10-32 at batch 16 needs 2.2) lies above 2 GiB then, which
// is why the JS side reads every address it gets back as unsigned.
constexpr size_t kMaxAllocation = (size_t)0xF0000000u;

uintptr_t heap_start = 0;
uintptr_t heap_end = 0;  // end of the last block
uintptr_t last_block = 0;

Header* block_at(uintptr_t p) { return reinterpret_cast<Header*>(p); }

#if MB_WASM_THREADS
// One lock around the heap. Allocation is rare (planning, model setup, the
// JS side's argument buffers), so a spin lock is enough; it never waits
// (memory.atomic.wait32 traps on a browser's main thread).
int heap_lock = 0;
struct HeapLock {
  HeapLock() {
    while (__atomic_exchange_n(&heap_lock, 1, __ATOMIC_ACQUIRE))
      while (__atomic_load_n(&heap_lock, __ATOMIC_RELAXED)) {
      }
  }
  ~HeapLock() { __atomic_store_n(&heap_lock, 0, __ATOMIC_RELEASE); }
};
#else
struct HeapLock {
  HeapLock() {}  // one thread, nothing to lock
};
#endif

bool ensure_memory(uintptr_t end) {
  // 64-bit: a full 4 GiB memory is 2^32 bytes, one past what size_t holds
  const uint64_t have = (uint64_t)__builtin_wasm_memory_size(0) * kPage;
  if (end <= have) return true;
  const uint64_t pages = ((uint64_t)end - have + kPage - 1) / kPage;
  return __builtin_wasm_memory_grow(0, (size_t)pages) != (size_t)-1;
}

void* allocate(size_t bytes) {
  HeapLock lock;
  if (!heap_start) {
    heap_start = ((uintptr_t)&__heap_base + kAlign - 1) & ~(uintptr_t)(kAlign - 1);
    heap_end = heap_start;
  }
  if (bytes > kMaxAllocation) return nullptr;
  const size_t need = ((bytes + kAlign - 1) & ~(kAlign - 1)) + sizeof(Header);
  for (uintptr_t p = heap_start; p < heap_end; p += block_at(p)->size) {
    Header* h = block_at(p);
    if (!h->free || h->size < need) continue;
    if (h->size - need >= sizeof(Header) + kAlign) {  // split off the tail as a free block
      uintptr_t t = p + need;
      Header* tail = block_at(t);
      tail->size = h->size - need;
      tail->prev_size = need;
      tail->free = 1;
      uintptr_t after = t + tail->size;
      if (after < heap_end) block_at(after)->prev_size = tail->size;
      if (last_block == p) last_block = t;
      h->size = need;
    }
    h->free = 0;
    return h + 1;
  }
  const uintptr_t p = heap_end;
  if (p + need <= p || !ensure_memory(p + need)) return nullptr;  // <=: heap_end may not wrap to 0
  Header* h = block_at(p);
  h->size = need;
  h->prev_size = last_block ? block_at(last_block)->size : 0;
  h->free = 0;
  last_block = p;
  heap_end = p + need;
  return h + 1;
}

void release(void* ptr) {
  if (!ptr) return;
  HeapLock lock;
  uintptr_t p = reinterpret_cast<uintptr_t>(ptr) - sizeof(Header);
  Header* h = block_at(p);
  h->free = 1;
  // merge with the next block
  uintptr_t next = p + h->size;
  if (next < heap_end && block_at(next)->free) {
    if (last_block == next) last_block = p;
    h->size += block_at(next)->size;
    uintptr_t after = p + h->size;
    if (after < heap_end) block_at(after)->prev_size = h->size;
  }
  // merge into the previous block
  if (h->prev_size) {
    uintptr_t prev = p - h->prev_size;
    if (block_at(prev)->free) {
      if (last_block == p) last_block = prev;
      block_at(prev)->size += h->size;
      uintptr_t after = prev + block_at(prev)->size;
      if (after < heap_end) block_at(after)->prev_size = block_at(prev)->size;
      p = prev;
      h = block_at(p);
    }
  }
  // give the tail back to the free space at the end of the heap
  if (p + h->size == heap_end) {
    heap_end = p;
    last_block = h->prev_size ? p - h->prev_size : 0;
  }
}

}  // namespace

extern "C" {
void* memcpy(void* dst, const void* src, size_t n) {
  unsigned char* d = static_cast<unsigned char*>(dst);
  const unsigned char* s = static_cast<const unsigned char*>(src);
  __builtin_memcpy(d, s, n);  // lowered to memory.copy with -mbulk-memory
  return dst;
}
void* memmove(void* dst, const void* src, size_t n) {
  __builtin_memmove(dst, src, n);
  return dst;
}
void* memset(void* dst, int value, size_t n) {
  __builtin_memset(dst, value, n);
  return dst;
}

__attribute__((visibility("default"))) void* mb_wasm_alloc(double bytes) {
  if (!(bytes >= 0) || bytes > (double)kMaxAllocation) return nullptr;
  return allocate((size_t)bytes);
}
__attribute__((visibility("default"))) void mb_wasm_free(void* ptr) { release(ptr); }
}

void* operator new(size_t n) { return allocate(n); }
void* operator new[](size_t n) { return allocate(n); }
void operator delete(void* p) noexcept { release(p); }
void operator delete[](void* p) noexcept { release(p); }
void operator delete(void* p, size_t) noexcept { release(p); }
void operator delete[](void* p, size_t) noexcept { release(p); }

namespace mb {
void* mb_alloc(size_t bytes) { return allocate(bytes); }
void mb_free(void* ptr) { release(ptr); }
void mb_copy(void* dst, const void* src, size_t bytes) { __builtin_memcpy(dst, src, bytes); }
void mb_zero(void* dst, size_t bytes) { __builtin_memset(dst, 0, bytes); }
void mb_return_free_memory() {}

#if !MB_WASM_THREADS
// Single-threaded build: the caller does all the work.
void run_parallel(int n, int, TaskFn fn, void* ctx) { fn(ctx, 0, n); }
int num_threads() { return 1; }
void set_num_threads(int) {}
void serial_scope_enter() {}
void serial_scope_leave() {}
#endif
}  // namespace mb
