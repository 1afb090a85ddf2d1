// Floating-point operations of one UNet forward, counted from the parameter
// table the config implies: every conv and linear as 2 x multiply-adds at
// the resolution it runs at, plus attention's two token x token products.
// Norms, activations and the elementwise tails are left out (a few percent),
// as in the usual GFLOP figures for diffusers' UNets.
import type { ParamInfo } from '../backend/backend.js';
import type { UNet2DConfig } from '../model/config.js';

/** FLOPs of one forward of one image of height x width. */
export function unetFlops(config: UNet2DConfig, parameters: readonly ParamInfo[], height: number, width: number): number {
  const levels = config.blockOutChannels.length;
  const pixelsAt = (level: number) => Math.ceil(height / 2 ** level) * Math.ceil(width / 2 ** level);
  // The level (downsampling count) a parameter's layer runs at, read from its diffusers name.
  const levelOf = (name: string): number => {
    let m = /^down_blocks\.(\d+)\.downsamplers\./.exec(name);
    if (m) return Number(m[1]) + 1; // a stride-2 conv: output at the next level
    m = /^down_blocks\.(\d+)\./.exec(name);
    if (m) return Number(m[1]);
    if (name.startsWith('mid_block.')) return levels - 1;
    m = /^up_blocks\.(\d+)\.upsamplers\./.exec(name);
    if (m) return levels - 2 - Number(m[1]); // after the 2x upsample
    m = /^up_blocks\.(\d+)\./.exec(name);
    if (m) return levels - 1 - Number(m[1]);
    return 0; // conv_in, conv_out
  };
  let flops = 0;
  for (const { name, shape } of parameters) {
    if (!name.endsWith('.weight')) continue;
    if (name.startsWith('time_embedding.') || name.startsWith('class_embedding.') || /\.time_emb_proj\./.test(name)) {
      if (shape.length === 2) flops += 2 * shape[0]! * shape[1]!; // once per image
      continue;
    }
    const pixels = pixelsAt(Math.max(0, levelOf(name)));
    if (shape.length === 4) {
      flops += 2 * shape[0]! * shape[1]! * shape[2]! * shape[3]! * pixels;
    } else if (shape.length === 2 && /\.attentions\.\d+\.|^mid_block\.attentions\./.test(name)) {
      flops += 2 * shape[0]! * shape[1]! * pixels; // q, k, v, out projections over every token
      // Q K^T and attention x V: 2 x T x T x C each, counted once per attention (at to_q).
      if (/\.to_q\.weight$/.test(name)) flops += 2 * 2 * pixels * pixels * shape[0]!;
    }
  }
  return flops;
}
