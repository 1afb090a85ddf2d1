import * as marble from '../../dist/browser/marble.js';
import { ddim20 } from './ddim20.mjs';

self.onmessage = async ({ data }) => {
  try {
    self.postMessage(await ddim20(marble, { threads: data.threads }));
  } catch (e) {
    self.postMessage({ error: String(e) });
  }
};
