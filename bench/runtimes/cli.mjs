// Node, Deno, Bun: `<runtime> cli.mjs THREADS` prints ddim20's JSON.
import * as marble from 'marble-diffusion';
import { ddim20 } from './ddim20.mjs';

const threads = Number((globalThis.Deno ? Deno.args : process.argv.slice(2))[0] ?? 1);
console.log(JSON.stringify(await ddim20(marble, { threads })));
