// CUDA device discovery, memory, the error record, and the C ABI of
// cuda_api.h. cudart is linked statically and loads libcuda.so.1 only when
// first called, so on a machine without a driver every entry here reports
// the runtime's reason instead of failing to load.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mutex>

#include "../engine/unet.h"
#include "cuda_api.h"
#include "cuda_common.cuh"

namespace mb {
namespace cuda {

namespace {

std::mutex g_mutex;        // guards discovery and g_device
int g_device = -1;         // the device models run on (one per process for now)
thread_local int t_device = -1;
thread_local cudaError_t t_error = cudaSuccess;
thread_local char t_message[512];
thread_local cudaStream_t t_stream = nullptr;  // queue_use's, else cudaStreamPerThread

void copy_text(char* dst, int len, const char* src) {
  if (!dst || len <= 0) return;
  strncpy(dst, src, (size_t)len - 1);
  dst[len - 1] = 0;
}

}  // namespace

void use_device_on_this_thread() {
  if (t_device != g_device && g_device >= 0) {
    cudaError_t err = cudaSetDevice(g_device);
    if (err != cudaSuccess) {
      record(err, "cudaSetDevice");
      return;
    }
    t_device = g_device;
  }
}

int current_device() { return g_device; }

int multiprocessor_count() {
  static int count = 0;  // one device per process (select_device)
  if (count == 0) {
    int n = 0;
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, g_device >= 0 ? g_device : 0) != cudaSuccess || n < 1) {
      (void)cudaGetLastError();
      return 1;
    }
    count = n;
  }
  return count;
}

bool failed() { return t_error != cudaSuccess; }

bool record(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return true;
  if (t_error == cudaSuccess) {
    t_error = err;
    const bool sticky = err == cudaErrorIllegalAddress || err == cudaErrorLaunchFailure ||
                        err == cudaErrorMisalignedAddress || err == cudaErrorIllegalInstruction ||
                        err == cudaErrorHardwareStackError || err == cudaErrorAssert;
    snprintf(t_message, sizeof(t_message), "%s: %s (%s)%s", what, cudaGetErrorString(err), cudaGetErrorName(err),
             sticky ? "; the CUDA context is lost, restart the process to use the GPU again" : "");
  }
  return false;
}

bool check_launch(const char* kernel) { return record(cudaGetLastError(), kernel); }

void clear_error() {
  t_error = cudaSuccess;
  t_message[0] = 0;
}

int sync_stream() {
  if (!failed()) {
    use_device_on_this_thread();
    record(cudaStreamSynchronize(stream()), "kernel execution (cudaStreamSynchronize)");
  }
  if (!failed()) record(cudaGetLastError(), "cudaGetLastError");
  if (!failed()) return kOk;
  // Report once, then let the next pass try again (a non-sticky error, such
  // as a bad launch configuration, does not poison the context).
  static thread_local char reported[512];
  copy_text(reported, sizeof(reported), t_message);
  clear_error();
  copy_text(t_message, sizeof(t_message), reported);
  return kErrDevice;
}

const char* error_text() { return t_message; }

int poll() { return failed() ? sync_stream() : kOk; }

// --- queues ---------------------------------------------------------------------

cudaStream_t stream() { return t_stream ? t_stream : cudaStreamPerThread; }

void* queue_new() {
  use_device_on_this_thread();
  cudaStream_t s = nullptr;
  // Non-blocking: nothing of ours uses the legacy default stream, and a
  // capture in progress must not be joined by it.
  if (cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) != cudaSuccess) {
    (void)cudaGetLastError();
    return nullptr;  // the model then uses the threads' default streams, and waits after each call
  }
  return s;
}

void queue_free(void* queue) {
  if (!queue) return;
  use_device_on_this_thread();
  cudaStreamSynchronize(static_cast<cudaStream_t>(queue));
  cudaStreamDestroy(static_cast<cudaStream_t>(queue));
  (void)cudaGetLastError();
}

void queue_use(void* queue) { t_stream = static_cast<cudaStream_t>(queue); }

// --- recording (CUDA graphs) -----------------------------------------------------
// The sampling loop records one forward pass of a model at one size and
// replays it each step: some hundreds of launches become one. ThreadLocal
// capture mode: other threads (other models) may go on allocating meanwhile.

int capture_begin() {
  if (!begin_launch()) return sync_stream();
  if (!record(cudaStreamBeginCapture(stream(), cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture"))
    return sync_stream();
  return kOk;
}

int capture_end(void** recording) {
  *recording = nullptr;
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream(), &graph);
  // A launch that failed while recording invalidates the capture: report it.
  if (ended != cudaSuccess || failed()) {
    if (graph) cudaGraphDestroy(graph);
    record(ended, "cudaStreamEndCapture");
    return sync_stream();
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (!record(made, "cudaGraphInstantiate")) return sync_stream();
  *recording = exec;
  return kOk;
}

int replay(void* recording) {
  if (!begin_launch()) return kErrDevice;
  return record(cudaGraphLaunch(static_cast<cudaGraphExec_t>(recording), stream()), "cudaGraphLaunch") ? kOk
                                                                                                       : kErrDevice;
}

void recording_free(void* recording) {
  if (recording) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(recording));
}

// --- memory ------------------------------------------------------------------
// Stream-ordered allocation (cudaMallocAsync / cudaFreeAsync on the model's
// queue) where the device has memory pools: a free does not wait for the
// whole device as cudaFree does (it would stall every other model's queue
// each time a sampling run ends or an arena grows), and the pool keeps freed
// blocks for the next request instead of returning them to the driver.
// Every allocation and free of a model happens under its QueueScope, so each
// block is used on the queue it was allocated on; the queue is synchronized
// before it is destroyed. MARBLE_CUDA_MALLOC_ASYNC=0 uses cudaMalloc/cudaFree.
// The mode is fixed when the device is selected, before any allocation, so a
// block is always freed the way it was allocated.

namespace {
bool g_async_alloc = false;

void choose_allocator(int device) {
  const char* env = getenv("MARBLE_CUDA_MALLOC_ASYNC");
  if (env && env[0] == '0') return;
  int pools = 0;
  if (cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device) != cudaSuccess || !pools) {
    (void)cudaGetLastError();
    return;
  }
  cudaMemPool_t pool = nullptr;
  if (cudaDeviceGetDefaultMemPool(&pool, device) != cudaSuccess) {
    (void)cudaGetLastError();
    return;
  }
  // Keep what was freed (a sampling run's buffers, an outgrown arena) for
  // the next allocation rather than unmapping it at every synchronization;
  // device_available() counts it as free.
  unsigned long long keep = ~0ull;
  if (cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep) != cudaSuccess) (void)cudaGetLastError();
  g_async_alloc = true;
}

// Bytes the default pool holds but no allocation uses: free for our purposes.
size_t pool_idle_bytes() {
  if (!g_async_alloc || g_device < 0) return 0;
  cudaMemPool_t pool = nullptr;
  unsigned long long reserved = 0, used = 0;
  if (cudaDeviceGetDefaultMemPool(&pool, g_device) != cudaSuccess ||
      cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved) != cudaSuccess ||
      cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &used) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return reserved > used ? (size_t)(reserved - used) : 0;
}
}  // namespace

void* device_alloc(size_t bytes) {
  if (failed()) return nullptr;
  use_device_on_this_thread();
  void* p = nullptr;
  const size_t size = bytes ? bytes : 16;
  cudaError_t err = g_async_alloc ? cudaMallocAsync(&p, size, stream()) : cudaMalloc(&p, size);
  if (err != cudaSuccess) {
    // Out of memory is an ordinary failure the caller reports (kErrOutOfMemory); clear it here.
    (void)cudaGetLastError();
    return nullptr;
  }
  return p;
}

void device_free(void* p) {
  if (!p) return;
  use_device_on_this_thread();
  // errors here only repeat an earlier fault
  if (g_async_alloc)
    cudaFreeAsync(p, stream());
  else
    cudaFree(p);
}

size_t device_available() {
  use_device_on_this_thread();
  size_t free_bytes = 0, total = 0;
  if (cudaMemGetInfo(&free_bytes, &total) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return free_bytes + pool_idle_bytes();
}

void upload(void* dst, const void* src, size_t bytes) {
  if (!bytes || !begin_launch()) return;
  record(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream()), "cudaMemcpy host to device");
}

void download(void* dst, const void* src, size_t bytes) {
  if (!bytes || !begin_launch()) return;
  // The host buffer must be complete when this returns: wait for the stream.
  if (record(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream()), "cudaMemcpy device to host"))
    record(cudaStreamSynchronize(stream()), "kernel execution before a copy back (cudaStreamSynchronize)");
}

void copy(void* dst, const void* src, size_t bytes) {
  if (!bytes || !begin_launch()) return;
  record(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream()), "cudaMemcpy device to device");
}

void zero(void* dst, size_t bytes) {
  if (!bytes || !begin_launch()) return;
  record(cudaMemsetAsync(dst, 0, bytes, stream()), "cudaMemset");
}

// --- discovery -----------------------------------------------------------------

int device_count(char* reason, int reason_len) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    char text[512];
    int runtime = 0;
    cudaRuntimeGetVersion(&runtime);
    // Without a driver, or with one older than the runtime linked in here,
    // cudart says "insufficient driver": name both cases.
    const char* hint = err == cudaErrorInsufficientDriver ? "; no NVIDIA driver is loaded, or it predates CUDA " : "";
    if (*hint)
      snprintf(text, sizeof(text), "%s (%s%s%d.%d)", cudaGetErrorString(err), cudaGetErrorName(err), hint,
               runtime / 1000, runtime % 1000 / 10);
    else
      snprintf(text, sizeof(text), "%s (%s)", cudaGetErrorString(err), cudaGetErrorName(err));
    copy_text(reason, reason_len, text);
    (void)cudaGetLastError();
    return 0;
  }
  if (count == 0) copy_text(reason, reason_len, "the CUDA driver reports no devices");
  return count;
}

int select_device(int device, char* reason, int reason_len) {
  std::lock_guard<std::mutex> lock(g_mutex);
  const int count = device_count(reason, reason_len);
  if (count == 0) return kErrUnsupported;
  if (device < 0 || device >= count) {
    char text[128];
    snprintf(text, sizeof(text), "CUDA device %d does not exist (%d present)", device, count);
    copy_text(reason, reason_len, text);
    return kErrInvalidArgument;
  }
  if (g_device >= 0 && g_device != device) {
    char text[160];
    snprintf(text, sizeof(text), "this process already runs models on CUDA device %d; one device per process for now",
             g_device);
    copy_text(reason, reason_len, text);
    return kErrUnsupported;
  }
  cudaError_t err = cudaSetDevice(device);
  if (err == cudaSuccess) err = cudaFree(nullptr);  // creates the context now, so failures surface here
  if (err != cudaSuccess) {
    char text[512];
    snprintf(text, sizeof(text), "CUDA device %d cannot be used: %s (%s)", device, cudaGetErrorString(err),
             cudaGetErrorName(err));
    copy_text(reason, reason_len, text);
    (void)cudaGetLastError();
    return kErrUnsupported;
  }
  g_device = device;
  t_device = device;
  choose_allocator(device);
  conv_wgmma_prepare();
  return kOk;
}

}  // namespace cuda

const Ops* cuda_ops() { return cuda::current_device() >= 0 ? cuda_ops_table(WeightType::kFloat32) : nullptr; }

}  // namespace mb

using namespace mb;

MB_API int mb_cuda_built(void) { return 1; }

MB_API int mb_cuda_device_count(char* reason, int reason_len) {
  std::lock_guard<std::mutex> lock(cuda::g_mutex);
  return cuda::device_count(reason, reason_len);
}

MB_API int mb_cuda_device_info(int index, MbCudaDevice* out, char* reason, int reason_len) {
  memset(out, 0, sizeof(*out));
  cudaDeviceProp prop;
  cudaError_t err = cudaGetDeviceProperties(&prop, index);
  if (err != cudaSuccess) {
    char text[512];
    snprintf(text, sizeof(text), "device %d: %s (%s)", index, cudaGetErrorString(err), cudaGetErrorName(err));
    cuda::copy_text(reason, reason_len, text);
    (void)cudaGetLastError();
    return kErrUnsupported;
  }
  cuda::copy_text(out->name, sizeof(out->name), prop.name);
  out->major = prop.major;
  out->minor = prop.minor;
  out->multiprocessors = prop.multiProcessorCount;
  out->total_bytes = (double)prop.totalGlobalMem;
  out->free_bytes = -1;  // only known inside a context; filled below when one exists
  cudaDriverGetVersion(&out->driver_version);
  cudaRuntimeGetVersion(&out->runtime_version);
  snprintf(out->pci_bus_id, sizeof(out->pci_bus_id), "%04x:%02x:%02x.0", prop.pciDomainID, prop.pciBusID,
           prop.pciDeviceID);
  if (cuda::current_device() == index) {
    out->free_bytes = (double)cuda::device_available();  // the memory pool's idle blocks count as free
  }
  (void)cudaGetLastError();
  return kOk;
}

#define MB_STR2(x) #x
#define MB_STR(x) MB_STR2(x)
MB_API const char* mb_cuda_build_info(void) {
  return "CUDA " MB_STR(__CUDACC_VER_MAJOR__) "." MB_STR(__CUDACC_VER_MINOR__) ", cudart static";
}

MB_API int mb_model_use_cuda(Model* m, int device, int weight_type) {
  if (m->finalized) {
    cuda::copy_text(m->error, sizeof(m->error), "choose the device before the weights are loaded");
    return kErrState;
  }
  if (weight_type < 0 || weight_type > 2) {
    cuda::copy_text(m->error, sizeof(m->error), "unknown weight type (0 float32, 1 float16, 2 bfloat16)");
    return kErrInvalidArgument;
  }
  char reason[400];
  const int status = cuda::select_device(device, reason, sizeof(reason));
  if (status != kOk) {
    char text[512];
    snprintf(text, sizeof(text), "no usable CUDA device: %s", reason);
    cuda::copy_text(m->error, sizeof(m->error), text);
    return status;
  }
  m->ops = cuda_ops_table((WeightType)weight_type, cuda_half_activations_wanted());
  if (!m->queue) m->queue = m->ops->queue_new();
  return kOk;
}

MB_API const char* mb_model_device(Model* m) { return m->ops ? m->ops->name : "cpu"; }

namespace {
__global__ void write_through_bad_pointer(float* p) { p[threadIdx.x] = 1.0f; }
}  // namespace

MB_API int mb_cuda_fault_probe(int device, char* message, int message_len) {
  char reason[400];
  int status = cuda::select_device(device, reason, sizeof(reason));
  if (status != kOk) {
    cuda::copy_text(message, message_len, reason);
    return status;
  }
  if (!cuda::begin_launch()) return kErrDevice;
  MB_LAUNCH(write_through_bad_pointer, 1, 32)(reinterpret_cast<float*>((uintptr_t)16));
  cuda::check_launch("write_through_bad_pointer");
  status = cuda::sync_stream();
  cuda::copy_text(message, message_len, status == kOk ? "the faulting kernel reported nothing" : cuda::error_text());
  return status;
}
