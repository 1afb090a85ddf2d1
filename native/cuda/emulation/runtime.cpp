// The CPU side of the CUDA emulation (cuda_emulation.h): block scheduling
// over ucontext fibers, the barrier and the warp shuffle, and the pieces of
// device.cu the op files call (memory, the error record), over host memory.
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <functional>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "../cuda_common.cuh"
#include "../half_bits.h"

namespace mb_emu {

thread_local ThreadState* t_current = nullptr;
thread_local uint3 t_block;
thread_local dim3 t_block_dim, t_grid_dim;
thread_local int g_bad_launches = 0;
// While a recording is made (Ops::capture_begin), launches and fills are
// appended here instead of run; a replay runs them in order with the
// arguments they had when recorded, as a CUDA graph does.
thread_local std::vector<std::function<void()>>* t_recording = nullptr;

namespace {

constexpr size_t kStackBytes = 256 << 10;

// What a fiber is stopped at when it hands control back to the scheduler.
enum class Waiting { kNothing, kBlockBarrier, kWarpCollective };

// One cp.async in flight, and the group it was committed in (-1: not yet).
struct AsyncCopy {
  void* dst;
  const void* src;
  int bytes, src_bytes;
  long long group;
};

// One wgmma in flight, and its group (-1: not yet committed). `c`: the
// accumulators when it was issued, which read as NaN until the wait (the
// first of a chain on the same registers; the next ones continue from it);
// `operands`: a hash of its shared-memory operands at issue, which must not
// change before the wait.
struct AsyncMma {
  bool bf16;
  int n;
  float* d;
  uint64_t desc_a, desc_b;
  long long group;
  std::vector<float> c;
  uint64_t operands;
};

struct Fiber {
  ThreadState state;
  ucontext_t context;
  std::vector<char> stack;
  bool done = false;
  Waiting waiting = Waiting::kNothing;
  std::vector<AsyncCopy> copies;  // issued, not landed
  long long groups = 0;           // cp.async groups committed so far
  std::vector<AsyncMma> mmas;     // wgmma issued, not carried out
  long long mma_groups = 0;       // wgmma groups committed so far
};

// Per OS thread: a launch runs entirely on the thread that makes it.
thread_local ucontext_t g_scheduler;
thread_local std::vector<Fiber> g_fibers;
thread_local Fiber* t_fiber = nullptr;
thread_local const std::function<void()>* g_body = nullptr;
thread_local std::vector<double> g_shuffle;
thread_local std::vector<const void*> g_row_addresses;  // ldmatrix: each thread's row

// One warp's mma.sync operands, as logical matrices, and which call each lane
// published them for. Two per warp, used alternately by successive calls: a
// lane that has read call c's operands and runs ahead publishes call c + 1's
// into the other slot, and cannot reach call c + 2 before every lane has read
// call c (call c + 1 waits for all of them).
struct MmaOperands {
  float a[16][16], b[16][8], c[16][8];
  uint64_t call[32];
};
thread_local std::vector<MmaOperands> g_mma[2];
thread_local std::vector<uint64_t> g_mma_calls;  // per thread of the block: mma.sync calls so far
thread_local uint64_t g_mma_block = 0;            // blocks run so far: tags calls apart from earlier blocks'
thread_local std::vector<uint8_t> g_dynamic_shared;  // the launch's dynamic shared memory (+ alignment slack)
thread_local uint8_t* g_dynamic_base = nullptr;

void land(const AsyncCopy& c) {
  if (c.src_bytes > 0) memcpy(c.dst, c.src, (size_t)c.src_bytes);
  if (c.src_bytes < c.bytes) memset((char*)c.dst + c.src_bytes, 0, (size_t)(c.bytes - c.src_bytes));
}

void fiber_main(unsigned index) {
  Fiber& f = g_fibers[index];
  t_fiber = &f;
  t_current = &f.state;
  (*g_body)();
  for (const AsyncCopy& c : f.copies) land(c);  // the hardware completes them; nobody waited
  f.copies.clear();
  f.done = true;
  swapcontext(&f.context, &g_scheduler);
}

// Hands control to the scheduler until it releases this fiber from `what`.
void wait_for(Waiting what) {
  Fiber* f = t_fiber;
  f->waiting = what;
  swapcontext(&f->context, &g_scheduler);
  t_fiber = f;
  t_current = &f->state;
}

unsigned linear_thread() {
  return t_current->tid.x + t_block_dim.x * (t_current->tid.y + t_block_dim.y * t_current->tid.z);
}

// A warp-collective instruction: every lane of the warp arrives before any leaves.
void warp_collective(const char* what) {
  if (!t_fiber || (t_block_dim.x * t_block_dim.y * t_block_dim.z) % 32 != 0) {
    fprintf(stderr, "emulated CUDA: %s needs whole warps in a kernel launched with MB_LAUNCH_SYNC\n", what);
    abort();
  }
  wait_for(Waiting::kWarpCollective);
}

// MB_EMU_SCHEDULE=reverse: blocks, warps and lanes last first.
bool reverse_schedule() {
  const char* s = getenv("MB_EMU_SCHEDULE");
  return s && strcmp(s, "reverse") == 0;
}

}  // namespace

void syncthreads() {
  if (!t_fiber) {  // a kernel launched with MB_LAUNCH, not MB_LAUNCH_SYNC, reached a barrier
    fprintf(stderr, "emulated CUDA: __syncthreads in a kernel not launched with MB_LAUNCH_SYNC\n");
    abort();
  }
  wait_for(Waiting::kBlockBarrier);  // the scheduler resumes everyone once all have arrived
}

void misaligned(const char* what, const void* p, size_t bytes) {
  fprintf(stderr, "emulated CUDA: %s at %p, not %zu-byte aligned (a misaligned-address fault on a GPU)\n", what, p, bytes);
  abort();
}

void cp_async(void* dst, const void* src, int bytes, int src_bytes) {
  check_aligned("cp.async's shared destination", dst, (size_t)bytes);
  check_aligned("cp.async's global source", src, (size_t)bytes);
  const AsyncCopy c{dst, src, bytes, src_bytes, -1};
  if (t_fiber)
    t_fiber->copies.push_back(c);
  else
    land(c);
}

uint8_t* dynamic_shared() { return g_dynamic_base; }

uint32_t shared_address(const void* p) {
  const uint8_t* q = static_cast<const uint8_t*>(p);
  if (!g_dynamic_base || q < g_dynamic_base || q >= g_dynamic_base + (g_dynamic_shared.size() - 128)) {
    fprintf(stderr, "emulated CUDA: shared_address of %p, outside the launch's dynamic shared memory\n", p);
    abort();
  }
  return (uint32_t)(q - g_dynamic_base);
}

namespace {

// Element (row, k) of a K-major operand under a "no swizzle" descriptor (wgmma.cuh).
float wgmma_operand(uint64_t desc, bool bf16, int row, int k) {
  const uint32_t start = (uint32_t)(desc & 0x3fff) << 4, lbo = (uint32_t)((desc >> 16) & 0x3fff) << 4,
                 sbo = (uint32_t)((desc >> 32) & 0x3fff) << 4;
  const uint32_t offset = start + (uint32_t)(row / 8) * sbo + (uint32_t)(k / 8) * lbo + (uint32_t)(row % 8) * 16 +
                          (uint32_t)(k % 8) * 2;
  if (offset + 2 > g_dynamic_shared.size() - 128) {
    fprintf(stderr, "emulated CUDA: a wgmma operand at shared byte %u, past the launch's dynamic shared memory\n", offset);
    abort();
  }
  uint16_t bits;
  memcpy(&bits, g_dynamic_base + offset, 2);
  return mb::half_bits_to_float(bf16 ? mb::WeightType::kBfloat16 : mb::WeightType::kFloat16, bits);
}

// Every bit of a wgmma's operands (A: 64 x 16, B: n x 16), hashed (FNV-1a).
uint64_t operand_hash(const AsyncMma& op) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](float v) {
    uint32_t bits;
    memcpy(&bits, &v, 4);
    h = (h ^ bits) * 1099511628211ull;
  };
  for (int k = 0; k < 16; ++k) {
    for (int row = 0; row < 64; ++row) mix(wgmma_operand(op.desc_a, op.bf16, row, k));
    for (int col = 0; col < op.n; ++col) mix(wgmma_operand(op.desc_b, op.bf16, col, k));
  }
  return h;
}

void carry_out(const AsyncMma& op, unsigned thread) {
  if (op.operands != 0 && operand_hash(op) != op.operands) {
    fprintf(stderr, "emulated CUDA: a wgmma's shared-memory operands changed between its issue and its wait\n");
    abort();
  }
  const unsigned warp = (thread / 32) % 4, lane = thread % 32, group = lane / 4, pair = lane % 4;
  for (int v = 0; v < op.n / 2; ++v) {
    const int row = (int)(16 * warp + group + 8 * ((v >> 1) & 1)), col = 8 * (v >> 2) + (int)(2 * pair) + (v & 1);
    double sum = op.c.empty() ? op.d[v] : op.c[(size_t)v];
    for (int k = 0; k < 16; ++k)
      sum += (double)wgmma_operand(op.desc_a, op.bf16, row, k) * (double)wgmma_operand(op.desc_b, op.bf16, col, k);
    op.d[v] = (float)sum;
  }
}

}  // namespace

void wgmma(bool bf16, int n, float* d, uint64_t desc_a, uint64_t desc_b) {
  if (!t_fiber || (t_block_dim.x * t_block_dim.y * t_block_dim.z) % 128 != 0) {
    fprintf(stderr, "emulated CUDA: wgmma needs whole warpgroups in a kernel launched with MB_LAUNCH_SYNC\n");
    abort();
  }
  if ((desc_a >> 62) != 0 || (desc_b >> 62) != 0) {
    fprintf(stderr, "emulated CUDA: wgmma descriptors with a swizzle mode are not emulated\n");
    abort();
  }
  AsyncMma op{bf16, n, d, desc_a, desc_b, -1, {}, 0};
  if (linear_thread() % 32 == 0) op.operands = operand_hash(op);  // one check per warp: the operands are the warpgroup's
  bool chained = false;  // an earlier wgmma in flight accumulates into the same registers: continue from it
  for (const AsyncMma& earlier : t_fiber->mmas) chained = chained || earlier.d == d;
  if (!chained) {
    op.c.assign(d, d + n / 2);
    for (int v = 0; v < n / 2; ++v) d[v] = NAN;  // undefined on the GPU until the wait
  }
  t_fiber->mmas.push_back(std::move(op));
}

void wgmma_commit() {
  for (AsyncMma& op : t_fiber->mmas)
    if (op.group < 0) op.group = t_fiber->mma_groups;
  ++t_fiber->mma_groups;
}

void wgmma_wait(int n) {
  Fiber* f = t_fiber;
  std::vector<AsyncMma> still;
  for (const AsyncMma& op : f->mmas)
    if (op.group >= 0 && op.group < f->mma_groups - n)
      carry_out(op, linear_thread());
    else
      still.push_back(op);
  f->mmas.swap(still);
}

void cp_async_commit() {
  if (!t_fiber) return;
  for (AsyncCopy& c : t_fiber->copies)
    if (c.group < 0) c.group = t_fiber->groups;
  ++t_fiber->groups;
}

void cp_async_wait(int n) {
  Fiber* f = t_fiber;
  if (!f) return;
  // Groups below groups - n land; the rest (and the uncommitted copies) stay in flight.
  std::vector<AsyncCopy> still;
  for (const AsyncCopy& c : f->copies)
    if (c.group >= 0 && c.group < f->groups - n)
      land(c);
    else
      still.push_back(c);
  f->copies.swap(still);
}

double shfl_down(double v, int delta) {
  const unsigned linear = linear_thread();
  g_shuffle[linear] = v;
  warp_collective("__shfl_down_sync");  // every lane has published its value
  const unsigned lane = linear & 31u;
  const double out = lane + (unsigned)delta < 32 && linear + delta < g_shuffle.size() ? g_shuffle[linear + delta] : v;
  warp_collective("__shfl_down_sync");  // every lane has read: the slots may be written again
  return out;
}

void ldmatrix_x4(uint32_t r[4], const void* row) {
  const unsigned linear = linear_thread();
  if (((uintptr_t)row & 15) != 0) {
    fprintf(stderr, "emulated CUDA: ldmatrix row address %p is not 16-byte aligned\n", row);
    abort();
  }
  g_row_addresses[linear] = row;
  warp_collective("ldmatrix");  // every lane has published its row
  const unsigned warp_base = linear & ~31u, lane = linear & 31u;
  for (unsigned q = 0; q < 4; ++q) {
    const char* source = static_cast<const char*>(g_row_addresses[warp_base + 8 * q + lane / 4]);
    memcpy(&r[q], source + 4 * (lane % 4), 4);
  }
  warp_collective("ldmatrix");  // every lane has read them: the table may be written again
}

void ldmatrix_x4_trans(uint32_t r[4], const void* row) {
  const unsigned linear = linear_thread();
  check_aligned("an ldmatrix row address", row, 16);
  g_row_addresses[linear] = row;
  warp_collective("ldmatrix");  // every lane has published its row
  const unsigned warp_base = linear & ~31u, lane = linear & 31u;
  for (unsigned q = 0; q < 4; ++q) {
    uint16_t lo, hi;
    const char* row0 = static_cast<const char*>(g_row_addresses[warp_base + 8 * q + 2 * (lane % 4)]);
    const char* row1 = static_cast<const char*>(g_row_addresses[warp_base + 8 * q + 2 * (lane % 4) + 1]);
    memcpy(&lo, row0 + 2 * (lane / 4), 2);
    memcpy(&hi, row1 + 2 * (lane / 4), 2);
    r[q] = (uint32_t)lo | ((uint32_t)hi << 16);
  }
  warp_collective("ldmatrix");  // every lane has read them: the table may be written again
}

void mma_m16n8k16(bool bf16, float d[4], const uint32_t a[4], const uint32_t b[2]) {
  const unsigned linear = linear_thread();
  const mb::WeightType type = bf16 ? mb::WeightType::kBfloat16 : mb::WeightType::kFloat16;
  const unsigned warp = linear / 32, lane = linear % 32, group = lane / 4, pair = lane % 4;
  const uint64_t count = g_mma_calls[linear]++, call = (g_mma_block << 32) | count;
  MmaOperands& s = g_mma[count & 1][warp];
  auto lo = [&](uint32_t r) { return mb::half_bits_to_float(type, (uint16_t)(r & 0xffffu)); };
  auto hi = [&](uint32_t r) { return mb::half_bits_to_float(type, (uint16_t)(r >> 16)); };
  // A: register r holds row group + 8 (r & 1), columns 2 pair + 8 (r >> 1) + {0, 1}.
  for (unsigned r = 0; r < 4; ++r) {
    const unsigned row = group + 8 * (r & 1), col = 2 * pair + 8 * (r >> 1);
    s.a[row][col] = lo(a[r]);
    s.a[row][col + 1] = hi(a[r]);
  }
  // B: register r holds rows (k) 2 pair + 8 r + {0, 1} of column group.
  for (unsigned r = 0; r < 2; ++r) {
    s.b[2 * pair + 8 * r][group] = lo(b[r]);
    s.b[2 * pair + 8 * r + 1][group] = hi(b[r]);
  }
  // C and D: element i at row group + 8 (i >> 1), column 2 pair + (i & 1).
  for (unsigned i = 0; i < 4; ++i) s.c[group + 8 * (i >> 1)][2 * pair + (i & 1)] = d[i];
  s.call[lane] = call;
  warp_collective("mma.sync");
  for (unsigned l = 0; l < 32; ++l)
    if (s.call[l] != call) {
      fprintf(stderr, "emulated CUDA: mma.sync call %llu of warp %u: lane %u did not take part\n",
              (unsigned long long)count, warp, l);
      abort();
    }
  for (unsigned i = 0; i < 4; ++i) {
    const unsigned row = group + 8 * (i >> 1), col = 2 * pair + (i & 1);
    double sum = s.c[row][col];
    for (unsigned k = 0; k < 16; ++k) sum += (double)s.a[row][k] * (double)s.b[k][col];
    d[i] = (float)sum;
  }
}

namespace {

// Runs block t_block's fibers to their ends, one warp at a time: a warp runs
// (its lanes in turn, each to its next collective or barrier, the collective
// released once every lane of the warp is at it) until all its lanes wait at
// __syncthreads or have ended; then the next warp; once every live thread is
// at the barrier, all are released and the warps go round again.
void run_block(unsigned threads, bool reverse) {
  const unsigned warps = (threads + 31) / 32;
  auto fiber_of = [&](unsigned w, unsigned l) -> Fiber* {
    const unsigned warp = reverse ? warps - 1 - w : w;
    const unsigned lane = reverse ? 31 - l : l;
    const unsigned i = warp * 32 + lane;
    return i < threads ? &g_fibers[i] : nullptr;
  };
  for (;;) {
    for (unsigned w = 0; w < warps; ++w) {
      for (;;) {
        for (unsigned l = 0; l < 32; ++l) {
          Fiber* f = fiber_of(w, l);
          if (f && !f->done && f->waiting == Waiting::kNothing) swapcontext(&g_scheduler, &f->context);
        }
        unsigned at_collective = 0, elsewhere = 0;
        for (unsigned l = 0; l < 32; ++l) {
          Fiber* f = fiber_of(w, l);
          if (!f) continue;
          if (!f->done && f->waiting == Waiting::kWarpCollective)
            ++at_collective;
          else
            ++elsewhere;
        }
        if (at_collective == 0) break;
        if (elsewhere != 0) {  // a lane ended or sits at __syncthreads: the collective never completes
          fprintf(stderr, "emulated CUDA: a warp-collective instruction in block (%u, %u, %u) that %u lanes of the warp never reach\n",
                  t_block.x, t_block.y, t_block.z, elsewhere);
          abort();
        }
        for (unsigned l = 0; l < 32; ++l)
          if (Fiber* f = fiber_of(w, l)) f->waiting = Waiting::kNothing;
      }
    }
    bool live = false;
    for (unsigned i = 0; i < threads; ++i)
      if (!g_fibers[i].done) {
        live = true;
        g_fibers[i].waiting = Waiting::kNothing;  // all are at the barrier (or ended): release it
      }
    if (!live) return;
  }
}

}  // namespace

void run_grid(dim3 grid, dim3 block, const std::function<void()>& body, bool cooperative, size_t shared_bytes) {
  const unsigned threads = block.x * block.y * block.z;
  if (threads > 1024 || grid.y > 65535 || grid.z > 65535 || threads == 0) {
    ++g_bad_launches;
    return;
  }
  if (t_recording) {
    t_recording->push_back([=, recorded = body]() { run_grid(grid, block, recorded, cooperative, shared_bytes); });
    return;
  }
  t_block_dim = block;
  t_grid_dim = grid;
  const bool reverse = reverse_schedule();
  const unsigned blocks = grid.x * grid.y * grid.z;
  auto block_index = [&](unsigned b) {
    const unsigned i = reverse ? blocks - 1 - b : b;
    return uint3{i % grid.x, (i / grid.x) % grid.y, i / (grid.x * grid.y)};
  };
  auto thread_index = [&](unsigned i) { return uint3{i % block.x, (i / block.x) % block.y, i / (block.x * block.y)}; };
  if (!cooperative) {  // no barriers: each thread runs to its end in turn, on this stack
    ThreadState state;
    t_fiber = nullptr;
    t_current = &state;
    for (unsigned b = 0; b < blocks; ++b) {
      t_block = block_index(b);
      for (unsigned i = 0; i < threads; ++i) {
        state.tid = thread_index(reverse ? threads - 1 - i : i);
        body();
      }
    }
    t_current = nullptr;
    return;
  }
  g_body = &body;
  g_dynamic_shared.assign(shared_bytes + 128, 0);
  g_dynamic_base = g_dynamic_shared.data() + (-(uintptr_t)g_dynamic_shared.data() & 127);
  g_fibers.resize(threads);
  g_shuffle.assign(threads, 0.0);
  g_row_addresses.assign(threads, nullptr);
  g_mma[0].resize((threads + 31) / 32);
  g_mma[1].resize((threads + 31) / 32);
  for (auto& f : g_fibers)
    if (f.stack.size() != kStackBytes) f.stack.resize(kStackBytes);
  for (unsigned b = 0; b < blocks; ++b) {
    t_block = block_index(b);
    g_mma_calls.assign(threads, 0);
    ++g_mma_block;
    for (unsigned i = 0; i < threads; ++i) {
      Fiber& f = g_fibers[i];
      f.done = false;
      f.waiting = Waiting::kNothing;
      f.copies.clear();
      f.groups = 0;
      f.mmas.clear();
      f.mma_groups = 0;
      f.state.tid = thread_index(i);
      getcontext(&f.context);
      f.context.uc_stack.ss_sp = f.stack.data();
      f.context.uc_stack.ss_size = f.stack.size();
      f.context.uc_link = nullptr;
      makecontext(&f.context, (void (*)())fiber_main, 1, i);
    }
    run_block(threads, reverse);
  }
  t_current = nullptr;
  t_fiber = nullptr;
}

}  // namespace mb_emu

namespace {
std::mutex g_mappings_mutex;
std::unordered_map<void*, std::pair<void*, size_t>> g_mappings;  // allocation -> (mapping, its length)
}  // namespace

// --- what device.cu provides on a GPU ------------------------------------------
namespace mb {
namespace cuda {

void use_device_on_this_thread() {}
int current_device() { return 0; }
int multiprocessor_count() { return 1; }
bool failed() { return false; }
bool record(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return true;
  fprintf(stderr, "emulated CUDA error in %s: %d\n", what, err);
  ++mb_emu::g_bad_launches;
  return false;
}
bool check_launch(const char*) { return true; }
void clear_error() {}
int sync_stream() {
  if (!mb_emu::g_bad_launches) return kOk;
  mb_emu::g_bad_launches = 0;
  return kErrDevice;
}
int select_device(int, char*, int) { return kOk; }
const char* error_text() { return "a launch configuration CUDA would refuse (see stderr)"; }
// Device memory as a GPU leaves it, and with a fence a GPU lacks: each
// allocation is filled with 0xFF bytes (NaN as float32, float16 and
// bfloat16), so a kernel that reads what nothing wrote gives NaN here as it
// would give garbage on a GPU (malloc's fresh pages are zeros, which hid
// that). The allocation ends 256-aligned (cudaMalloc's alignment) against an
// inaccessible page, so a read or write past its end faults at once.
void* device_alloc(size_t bytes) {
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  const size_t used = ((bytes ? bytes : 16) + 255) / 256 * 256;
  const size_t mapped = (used + page - 1) / page * page + page;
  uint8_t* base = static_cast<uint8_t*>(mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (base == MAP_FAILED) return nullptr;
  if (mprotect(base + mapped - page, page, PROT_NONE) != 0) {
    munmap(base, mapped);
    return nullptr;
  }
  uint8_t* p = base + mapped - page - used;
  memset(p, 0xFF, used);
  std::lock_guard<std::mutex> lock(g_mappings_mutex);
  g_mappings[p] = {base, mapped};
  return p;
}
void device_free(void* p) {
  if (!p) return;
  std::lock_guard<std::mutex> lock(g_mappings_mutex);
  auto it = g_mappings.find(p);
  if (it == g_mappings.end()) {
    fprintf(stderr, "emulated CUDA: device_free of %p, not a device allocation\n", p);
    abort();
  }
  munmap(it->second.first, it->second.second);
  g_mappings.erase(it);
}
// The emulated device's memory, as a GPU would report it (the engine refuses
// plans beyond it before allocating; test/cuda_suite.ts checks that).
size_t device_available() { return (size_t)8 << 30; }
// Copies between host and device are not recorded (a graph would read the
// host buffer at replay, not now): the recorded passes make none, and one
// that did would fail here as it should on a GPU.
void upload(void* dst, const void* src, size_t bytes) {
  if (mb_emu::t_recording) {
    record(1, "a host-to-device copy while recording");
    return;
  }
  memcpy(dst, src, bytes);
}
void download(void* dst, const void* src, size_t bytes) {
  if (mb_emu::t_recording) {
    record(1, "a device-to-host copy while recording");
    return;
  }
  memcpy(dst, src, bytes);
}
void zero(void* dst, size_t bytes) {
  if (mb_emu::t_recording)
    mb_emu::t_recording->push_back([=]() { memset(dst, 0, bytes); });
  else
    memset(dst, 0, bytes);
}
void copy(void* dst, const void* src, size_t bytes) {
  if (mb_emu::t_recording)
    mb_emu::t_recording->push_back([=]() { memcpy(dst, src, bytes); });
  else
    memcpy(dst, src, bytes);
}

// One in-order queue (this CPU thread runs everything as it is called).
cudaStream_t stream() { return nullptr; }
void* queue_new() {
  static char the_queue;
  return &the_queue;
}
void queue_free(void*) {}
void queue_use(void*) {}
int poll() { return sync_stream(); }

int capture_begin() {
  if (mb_emu::t_recording) return kErrDevice;  // captures do not nest
  mb_emu::t_recording = new std::vector<std::function<void()>>();
  return kOk;
}
int capture_end(void** recording) {
  *recording = mb_emu::t_recording;
  mb_emu::t_recording = nullptr;
  if (sync_stream() != kOk) {  // a launch CUDA would refuse invalidates the capture
    recording_free(*recording);
    *recording = nullptr;
    return kErrDevice;
  }
  return kOk;
}
int replay(void* recording) {
  for (auto& op : *static_cast<std::vector<std::function<void()>>*>(recording)) op();
  return kOk;
}
void recording_free(void* recording) { delete static_cast<std::vector<std::function<void()>>*>(recording); }

}  // namespace cuda

const Ops* cuda_ops() { return cuda_ops_table(WeightType::kFloat32); }

}  // namespace mb
