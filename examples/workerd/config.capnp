# workerd config for examples/workerd/worker.js (run from the package root
# after `npm run build`):
#   npx workerd serve examples/workerd/config.capnp --socket-addr http=127.0.0.1:8787
#   curl -o seven.png 'http://127.0.0.1:8787/digit?class=7&seed=1'
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [(name = "main", worker = .digits)],
  sockets = [(name = "http", address = "127.0.0.1:8787", http = (), service = "main")],
);

const digits :Workerd.Worker = (
  modules = [
    (name = "worker.js", esModule = embed "worker.js"),
    (name = "marble.js", esModule = embed "../../dist/browser/marble.js"),
    (name = "marble.wasm", wasm = embed "../../wasm/dist/marble.wasm"),
    (name = "unet/config.json", json = embed "../../models/mnist/unet/config.json"),
    (name = "unet/diffusion_pytorch_model.safetensors", data = embed "../../models/mnist/unet/diffusion_pytorch_model.safetensors"),
    (name = "scheduler/scheduler_config.json", json = embed "../../models/mnist/scheduler/scheduler_config.json"),
  ],
  compatibilityDate = "2026-11-01",
);
