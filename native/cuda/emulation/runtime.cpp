// The CPU side of the CUDA emulation (cuda_emulation.h): block scheduling
// over ucontext fibers, the barrier and the warp shuffle, and the pieces of
// device.cu the op files call (memory, the error record), over host memory.
#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>

#include <functional>
#include <vector>

#include "../cuda_common.cuh"

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

struct Fiber {
  ThreadState state;
  ucontext_t context;
  std::vector<char> stack;
  bool done = false;
};

// Per OS thread: a launch runs entirely on the thread that makes it.
thread_local ucontext_t g_scheduler;
thread_local std::vector<Fiber> g_fibers;
thread_local Fiber* t_fiber = nullptr;
thread_local const std::function<void()>* g_body = nullptr;
thread_local std::vector<double> g_shuffle;

void fiber_main(unsigned index) {
  Fiber& f = g_fibers[index];
  t_fiber = &f;
  t_current = &f.state;
  (*g_body)();
  f.done = true;
  swapcontext(&f.context, &g_scheduler);
}

}  // namespace

void syncthreads() {
  Fiber* f = t_fiber;
  if (!f) {  // a kernel launched with MB_LAUNCH, not MB_LAUNCH_SYNC, reached a barrier
    fprintf(stderr, "emulated CUDA: __syncthreads in a kernel not launched with MB_LAUNCH_SYNC\n");
    abort();
  }
  swapcontext(&f->context, &g_scheduler);  // the scheduler resumes everyone once all have arrived
  t_fiber = f;
  t_current = &f->state;
}

double shfl_down(double v, int delta) {
  const unsigned linear = t_current->tid.x + t_block_dim.x * (t_current->tid.y + t_block_dim.y * t_current->tid.z);
  g_shuffle[linear] = v;
  syncthreads();
  const unsigned lane = linear & 31u;
  const double out = lane + (unsigned)delta < 32 && linear + delta < g_shuffle.size() ? g_shuffle[linear + delta] : v;
  syncthreads();
  return out;
}

void run_grid(dim3 grid, dim3 block, const std::function<void()>& body, bool cooperative) {
  const unsigned threads = block.x * block.y * block.z;
  if (threads > 1024 || grid.y > 65535 || grid.z > 65535 || threads == 0) {
    ++g_bad_launches;
    return;
  }
  if (t_recording) {
    t_recording->push_back([=, recorded = body]() { run_grid(grid, block, recorded, cooperative); });
    return;
  }
  t_block_dim = block;
  t_grid_dim = grid;
  if (!cooperative) {  // no barriers: each thread runs to its end in turn, on this stack
    ThreadState state;
    t_fiber = nullptr;
    t_current = &state;
    for (unsigned bz = 0; bz < grid.z; ++bz)
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) {
          t_block = uint3{bx, by, bz};
          for (unsigned i = 0; i < threads; ++i) {
            state.tid = uint3{i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
            body();
          }
        }
    t_current = nullptr;
    return;
  }
  g_body = &body;
  t_block_dim = block;
  t_grid_dim = grid;
  g_fibers.resize(threads);
  g_shuffle.assign(threads, 0.0);
  for (auto& f : g_fibers)
    if (f.stack.size() != kStackBytes) f.stack.resize(kStackBytes);
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        t_block = uint3{bx, by, bz};
        for (unsigned i = 0; i < threads; ++i) {
          Fiber& f = g_fibers[i];
          f.done = false;
          f.state.tid = uint3{i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
          getcontext(&f.context);
          f.context.uc_stack.ss_sp = f.stack.data();
          f.context.uc_stack.ss_size = f.stack.size();
          f.context.uc_link = nullptr;
          makecontext(&f.context, (void (*)())fiber_main, 1, i);
        }
        // Rounds: each live thread runs to its next barrier (or its end).
        for (unsigned live = threads; live > 0;) {
          live = 0;
          for (unsigned i = 0; i < threads; ++i) {
            Fiber& f = g_fibers[i];
            if (f.done) continue;
            swapcontext(&g_scheduler, &f.context);
            if (!f.done) ++live;
          }
        }
      }
  t_current = nullptr;
  t_fiber = nullptr;
}

}  // namespace mb_emu

// --- what device.cu provides on a GPU ------------------------------------------
namespace mb {
namespace cuda {

void use_device_on_this_thread() {}
int current_device() { return 0; }
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
void* device_alloc(size_t bytes) { return mb_alloc(bytes ? bytes : 16); }
void device_free(void* p) { mb_free(p); }
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

const Ops* cuda_ops_table();  // ops_table.cu, compiled with the emulation
const Ops* cuda_ops() { return cuda_ops_table(); }

}  // namespace mb
