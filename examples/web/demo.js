// The demo page: controls, progress, canvases. Sampling runs in demo_worker.js.
const $ = (id) => document.getElementById(id);
const worker = new Worker(new URL('./demo_worker.js', import.meta.url), { type: 'module' });

for (const value of ['mixed', 0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
  $('digit').append(new Option(value === 'mixed' ? '0-9' : String(value), String(value)));
const cores = navigator.hardwareConcurrency || 1;
for (let n = 1; n <= Math.min(cores, 8); n++) $('threads').append(new Option(String(n), String(n), n === cores, n === cores));
if (!crossOriginIsolated) {
  $('threads').value = '1';
  $('threads').disabled = true;
}

function drawGrid(canvas, images) {
  const columns = Math.ceil(Math.sqrt(images.length * 2)); // wider than tall
  const size = images[0].width;
  canvas.width = columns * (size + 2);
  canvas.height = Math.ceil(images.length / columns) * (size + 2);
  const context = canvas.getContext('2d');
  context.fillRect(0, 0, canvas.width, canvas.height);
  images.forEach((image, i) =>
    context.putImageData(new ImageData(image.data, image.width), (i % columns) * (size + 2), Math.floor(i / columns) * (size + 2)),
  );
}

let settings = null;
function busy(running) {
  $('generate').disabled = running;
  $('stop').disabled = !running;
  document.body.dataset.state = running ? 'running' : 'idle';
}

$('controls').addEventListener('submit', (event) => {
  event.preventDefault();
  settings = {
    type: 'generate',
    digit: $('digit').value,
    scheduler: $('scheduler').value,
    steps: Number($('steps').value),
    guidance: Number($('guidance').value),
    batch: Number($('batch').value),
    seed: Number($('seed').value),
    threads: Number($('threads').value),
  };
  busy(true);
  $('progress').value = 0;
  $('status').textContent = 'Loading the model…';
  worker.postMessage(settings);
});
$('stop').addEventListener('click', () => worker.postMessage({ type: 'stop' }));

worker.onmessage = async ({ data }) => {
  switch (data.type) {
    case 'loaded': {
      const b = data.backend;
      $('backend').textContent = `Backend: ${b.name} (${b.isa}), ${b.threads} thread${b.threads > 1 ? 's' : ''}${b.note ? ` — ${b.note}` : ''}.`;
      break;
    }
    case 'step':
      $('progress').value = (data.index + 1) / data.total;
      $('status').textContent = `Step ${data.index + 1} of ${data.total}: ${data.ms.toFixed(1)} ms`;
      drawGrid($('preview'), data.preview);
      break;
    case 'done':
      drawGrid($('result'), data.images);
      $('status').textContent = `Done: ${settings.steps} steps in ${data.ms.toFixed(0)} ms, ${data.msPerStep.toFixed(1)} ms per step (batch ${settings.batch}).`;
      busy(false);
      document.body.dataset.done = 'true';
      compareWithNative(data.msPerStep);
      break;
    case 'stopped':
      $('status').textContent = 'Stopped.';
      busy(false);
      break;
    case 'error':
      $('status').textContent = data.message;
      busy(false);
      break;
  }
};

// Served by `marble demo` (Node), the server can time the native addon on the same work.
async function compareWithNative(wasmMsPerStep) {
  const query = new URLSearchParams({ scheduler: settings.scheduler, steps: settings.steps, batch: settings.batch, guidance: settings.guidance });
  const response = await fetch(`/api/native?${query}`).catch(() => null);
  if (!response?.ok) return;
  const native = await response.json();
  $('native').textContent =
    `Native vs wasm: the Node server's ${native.backend} backend (${native.isa}, ${native.threads} threads) takes ` +
    `${native.msPerStep.toFixed(1)} ms per step for the same work, ${(wasmMsPerStep / native.msPerStep).toFixed(1)}x faster than wasm in this page.`;
}

busy(false);
$('status').textContent = 'Ready: press Generate.';
document.body.dataset.ready = 'true';
