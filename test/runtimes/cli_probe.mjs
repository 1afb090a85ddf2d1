// Deno, Bun (and Node) run this: it imports marble by its package name, as a
// user's code would, probes every source and prints one JSON line.
//   <runtime> cli_probe.mjs RUNTIME THREADS PACKAGE_URL
import * as marble from 'marble-diffusion';
import { fetchModelFiles, probe } from './probe.mjs';

const [runtime, threads, packageUrl] = (globalThis.Deno ? Deno.args : process.argv.slice(2));
const report = await probe(marble, {
  runtime,
  threads: Number(threads),
  sources: {
    path: marble.embeddedModel() instanceof URL ? decodeURIComponent(marble.embeddedModel().pathname) : marble.embeddedModel(),
    url: new URL('models/mnist/', packageUrl),
    files: await fetchModelFiles(packageUrl),
  },
});
console.log(JSON.stringify(report));
