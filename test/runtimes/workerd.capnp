# workerd config for test/runtimes.test.ts (the socket address is set on the
# command line: --socket-addr http=127.0.0.1:PORT).
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [(name = "main", worker = .probe)],
  sockets = [(name = "http", address = "127.0.0.1:0", http = (), service = "main")],
);

const probe :Workerd.Worker = (
  modules = [
    (name = "worker.js", esModule = embed "workerd_probe.js"),
    (name = "probe.mjs", esModule = embed "probe.mjs"),
    (name = "marble.js", esModule = embed "../../dist/browser/marble.js"),
    (name = "marble.wasm", wasm = embed "../../wasm/dist/marble.wasm"),
    (name = "unet/config.json", json = embed "../../models/mnist/unet/config.json"),
    (name = "unet/diffusion_pytorch_model.safetensors", data = embed "../../models/mnist/unet/diffusion_pytorch_model.safetensors"),
    (name = "scheduler/scheduler_config.json", json = embed "../../models/mnist/scheduler/scheduler_config.json"),
  ],
  compatibilityDate = "2026-11-01",
);
