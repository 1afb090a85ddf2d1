// The training step: add-noise, the forward in training mode (which keeps
// each layer's inputs in its `saved` record), the MSE loss, and the backward
// walk, which visits the graph of unet.cpp in reverse, block for block.
//
// Every backward op adds into its input gradients, because activations feed
// several consumers (a resnet's input feeds its norm and its residual; a down
// block's outputs are also skips), so gradient buffers start zero-filled.
// The exceptions, with a single producer, skip the fill: a conv input that
// only the conv reads (conv_backward_fresh) and a resnet's dx, which starts
// as its residual gradient. Parameter gradients accumulate across calls
// until zero_grad.
//
// Every op goes through the model's device table (ex.ops()), over gradients
// and activations in the device's memory; on a device with its own memory
// the batch is staged into the arena first, and the only copy back in a step
// is the per-sample squared sums the loss is formed from.
#include "exec.h"

namespace mb {

namespace {

float* G(Exec& ex, int index) { return ex.m->params[index].grad; }

// Gradients of a convolution or linear layer: weights and bias into the
// parameter gradients; the input gradient added into dx (if wanted).
void conv_backward(Exec& ex, const ConvLayer& c, const ConvSaved& s, const Act& dy, Act* dx, bool accumulate = true) {
  const Ops& ops = ex.ops();
  float* scratch_w = ex.arena->alloc(ops.conv2d_backward_weights_scratch_floats(s.geometry, c.cout, c.cin, c.k));
  float* scratch_d =
      dx ? ex.arena->alloc(ops.conv2d_backward_data_scratch_floats(s.geometry, c.cout, c.cin, c.k, conv_uses_winograd(ex.m, c))) : nullptr;
  if (!ex.run()) return;
  ops.conv2d_backward_weights(s.in.data, s.geometry, dy.data, c.cout, c.cin, c.k, G(ex, c.weight), G(ex, c.bias),
                              scratch_w, ex.zero_row);
  if (dx) ops.conv2d_backward_data(dy.data, s.geometry, c.packed, dx->data, scratch_d, ex.zero_row, accumulate);
}

// d(input) of a convolution whose input feeds nothing else: a new buffer,
// which the dX convolution writes rather than adds into (no zero-fill).
Act conv_backward_fresh(Exec& ex, const ConvLayer& c, const ConvSaved& s, const Act& dy) {
  if (s.geometry.upsample == 2) {  // its dX is summed 2x2 into place: start from zeros
    Act dx = ex.zeros(s.in.h, s.in.w, s.in.c);
    conv_backward(ex, c, s, dy, &dx);
    return dx;
  }
  Act dx = ex.alloc(s.in.h, s.in.w, s.in.c);
  conv_backward(ex, c, s, dy, &dx, false);
  return dx;
}

// dW and db of a linear layer (cin -> cout) over `rows` vectors, its output
// gradient's rows dy_ld floats apart.
void linear_weight_grad(Exec& ex, int weight, int bias, int cin, int cout, const float* x, int rows, const float* dy,
                        int dy_ld) {
  ConvGeometry g = rows_geometry(rows, cin, cout);
  g.out_ld = dy_ld;
  // The geometry's batch is 1 with `rows` pixels: the Exec batch does not apply.
  float* scratch = ex.arena->alloc(ex.ops().conv2d_backward_weights_scratch_floats(g, cout, cin, 1));
  if (ex.run()) ex.ops().conv2d_backward_weights(x, g, dy, cout, cin, 1, G(ex, weight), G(ex, bias), scratch, ex.zero_row);
}

// dx += dy W for a linear layer (or several fused, like attention's q|k|v).
void linear_data_grad(Exec& ex, const ConvLayer& c, int rows, const float* dy, float* dx) {
  const ConvGeometry g = rows_geometry(rows, c.cin, c.cout);
  float* scratch = ex.arena->alloc(ex.ops().conv2d_backward_data_scratch_floats(g, c.cout, c.cin, 1, false));
  if (ex.run()) ex.ops().conv2d_backward_data(dy, g, c.packed, dx, scratch, ex.zero_row, true);
}

// A linear layer over `rows` vectors: dW, db, and dx += dy W (if dx).
void linear_backward(Exec& ex, const ConvLayer& c, const float* x, int rows, const float* dy, float* dx) {
  linear_weight_grad(ex, c.weight, c.bias, c.cin, c.cout, x, rows, dy, c.cout);
  if (dx) linear_data_grad(ex, c, rows, dy, dx);
}

// dx += the norm's input gradient, or dx = it where `fresh` (dx from ex.alloc, unfilled).
void norm_backward(Exec& ex, const NormLayer& n, const Act& x, const float* stats, bool silu, const float* scale_shift,
                   int scale_shift_ld, const Act& dy, const Act& dx, float* dscale_shift, bool fresh = false) {
  GroupNormArgs a;
  a.batch = ex.batch;
  a.pixels = x.h * x.w;
  a.channels = x.c;
  a.groups = n.groups;
  a.eps = n.eps;
  a.scale_shift = scale_shift;
  a.scale_shift_ld = scale_shift_ld;
  a.silu = silu;
  a.dx_overwrite = fresh;
  float* scratch = ex.arena->alloc(ex.ops().group_norm_backward_scratch_floats(a));
  if (!ex.run()) return;
  a.gamma = P(ex, n.gamma);
  a.beta = P(ex, n.beta);
  ex.ops().group_norm_backward(x.data, a, stats, dy.data, dx.data, G(ex, n.gamma), G(ex, n.beta), dscale_shift, scratch);
}

// d(out) / divisor, as a new buffer (or dy itself when the divisor is 1).
Act divided(Exec& ex, const Act& dy, float divisor) {
  if (divisor == 1.0f) return dy;
  Act out = ex.alloc(dy.h, dy.w, dy.c);
  if (ex.run()) ex.ops().divide_scalar(dy.data, divisor, (long long)dy.floats(ex.batch), out.data);
  return out;
}

// ResnetBlock2D backward: returns d(input); writes the gradient of its time
// projection into its columns of dtemb_projs (Model::temb_projs' output).
Act resnet_backward(Exec& ex, const ResnetLayer& r, const Act& dout, float* dtemb_projs) {
  const ResnetSaved& s = r.saved;
  const Act dpre = divided(ex, dout, r.output_scale_factor);
  // Without resampling the residual branch's input is x itself, so dx starts
  // as that branch's gradient: dpre (an identity shortcut), or zeros for the
  // shortcut conv's dX or the resampling's backward to add into.
  const bool identity = !r.has_shortcut && r.resample == 0;
  Act dx = identity ? ex.alloc(s.x.h, s.x.w, s.x.c) : ex.zeros(s.x.h, s.x.w, s.x.c);
  if (identity && ex.run()) ex.ops().copy(dx.data, dpre.data, sizeof(float) * dx.floats(ex.batch));

  // conv2 (through the dropout mask) and the residual branch
  Act dh2 = conv_backward_fresh(ex, r.conv2, ConvSaved{s.h2d, dpre, make_geometry(ex, s.h2d, 1, 1, 1, 1, dpre)}, dpre);
  if (ex.m->dropout > 0 && ex.run())
    ex.ops().dropout_apply(ex.dropout_seed, s.dropout_stream, ex.m->dropout, dh2.data, (long long)dh2.floats(ex.batch),
                           dh2.data);
  // d(xres), the resampled input's gradient: dx itself when nothing
  // resamples, else dpre or the shortcut conv's dX, resampled back below.
  Act dxres = dx;
  if (r.resample != 0) dxres = r.has_shortcut ? ex.zeros(s.xres.h, s.xres.w, s.xres.c) : dpre;
  if (r.has_shortcut)
    conv_backward(ex, r.conv_shortcut, ConvSaved{s.xres, dpre, make_geometry(ex, s.xres, 1, 1, 0, 0, dpre)}, dpre, &dxres);

  // GroupNorm2 (+ scale/shift) + SiLU, and the time projection's gradient
  // (its input gradient, through every resnet's projection at once, is
  // taken in run_backward).
  const ConvLayer& proj = r.time_emb_proj;
  const int temb_ld = ex.m->temb_projs.cout;  // dtemb_projs' row stride
  float* dtemb = dtemb_projs + r.temb_offset;
  Act dh1 = ex.alloc(s.h1.h, s.h1.w, s.h1.c);  // written whole by the norm's backward
  if (ex.m->scale_shift) {
    norm_backward(ex, r.norm2, s.h1, s.stats2, true, s.temb_proj, temb_ld, dh2, dh1, dtemb, true);
  } else {
    norm_backward(ex, r.norm2, s.h1, s.stats2, true, nullptr, 0, dh2, dh1, nullptr, true);
    // hidden + temb[:, :, None, None]: dtemb[b][c] = sum over pixels of dh1,
    // summed contiguously, then each sample's row put in place
    float* sums = ex.zeros((size_t)ex.batch * proj.cout);
    if (ex.run()) {
      ex.ops().add_broadcast_backward(dh1.data, ex.batch, s.h1.h * s.h1.w, s.h1.c, sums);
      for (int b = 0; b < ex.batch; ++b)
        ex.ops().copy(dtemb + (size_t)b * temb_ld, sums + (size_t)b * proj.cout, sizeof(float) * proj.cout);
    }
  }
  linear_weight_grad(ex, proj.weight, proj.bias, proj.cin, proj.cout, ex.silu_emb, ex.batch, dtemb, temb_ld);

  // conv1, the resampling, GroupNorm1 + SiLU
  Act dhin = conv_backward_fresh(ex, r.conv1, ConvSaved{s.hin, s.h1, make_geometry(ex, s.hin, 1, 1, 1, 1, s.h1)}, dh1);
  Act dh0 = dhin;
  if (r.resample != 0) {
    dh0 = ex.zeros(s.h0.h, s.h0.w, s.h0.c);
    if (ex.run()) {
      const Ops& ops = ex.ops();
      if (r.resample > 0) {
        ops.upsample_nearest2x_backward(dhin.data, ex.batch, s.x.h, s.x.w, s.x.c, dh0.data, s.x.c);
        ops.upsample_nearest2x_backward(dxres.data, ex.batch, s.x.h, s.x.w, s.x.c, dx.data, s.x.c);
      } else {
        ops.avgpool2x2_backward(dhin.data, ex.batch, s.x.h, s.x.w, s.x.c, dh0.data);
        ops.avgpool2x2_backward(dxres.data, ex.batch, s.x.h, s.x.w, s.x.c, dx.data);
      }
    }
  }
  norm_backward(ex, r.norm1, s.x, s.stats1, true, nullptr, 0, dh0, dx, nullptr);
  return dx;
}

// Attention block backward: returns d(input).
Act attention_backward_block(Exec& ex, const AttnLayer& a, const Act& dout) {
  const AttnSaved& s = a.saved;
  const int rows = ex.batch * s.x.h * s.x.w;
  const int C = a.channels;
  const Act dpre = divided(ex, dout, a.rescale_output_factor);
  Act dx = ex.alloc(s.x.h, s.x.w, s.x.c);
  if (ex.run()) ex.ops().copy(dx.data, dpre.data, sizeof(float) * dx.floats(ex.batch));  // the residual's

  float* dattn = ex.zeros((size_t)rows * C);
  linear_backward(ex, a.out, s.attn, rows, dpre.data, dattn);

  AttentionArgs args;
  args.batch = ex.batch;
  args.tokens = s.x.h * s.x.w;
  args.heads = a.heads;
  args.head_dim = a.head_dim;
  args.scale = 1.0f / sqrt_f32((float)a.head_dim);
  args.probs = s.probs;
  float* dqkv = ex.arena->alloc((size_t)rows * 3 * C);
  float* scratch = ex.arena->alloc(ex.ops().attention_backward_scratch_floats(args));
  if (ex.run()) ex.ops().attention_backward(s.qkv, args, dattn, dqkv, scratch);

  // The fused q|k|v projection: dW per layer from its column slice of dqkv,
  // dx through the fused weights in one GEMM.
  Act dnormed = ex.zeros(s.x.h, s.x.w, s.x.c);
  const int weights[3] = {a.q_w, a.k_w, a.v_w};
  const int biases[3] = {a.q_b, a.k_b, a.v_b};
  for (int part = 0; part < 3; ++part)
    linear_weight_grad(ex, weights[part], biases[part], C, C, s.normed.data, rows, dqkv + part * C, 3 * C);
  linear_data_grad(ex, a.qkv, rows, dqkv, dnormed.data);
  if (a.has_norm)
    norm_backward(ex, a.norm, s.x, s.stats, false, nullptr, 0, dnormed, dx, nullptr);
  else if (ex.run())
    ex.ops().add_forward(dx.data, dnormed.data, (long long)dx.floats(ex.batch), dx.data);
  return dx;
}

void add_into(Exec& ex, const Act& dst, const Act& src) {
  if (ex.run()) ex.ops().add_forward(dst.data, src.data, (long long)dst.floats(ex.batch), dst.data);
}

// The backward walk. `dy` is d(loss)/d(UNet output) in NHWC; the timesteps
// and class labels are the device copies the forward read.
void run_backward(Exec& ex, const Act& dy, const float* timesteps, const float* class_cond) {
  Model* m = ex.m;
  ForwardSaved& saved = m->saved;
  const int B = ex.batch;
  const int TE = m->time_embed_dim;
  ex.silu_emb = saved.silu_emb;
  // d(every resnet's time projection), each resnet filling its columns
  float* dtemb_projs = ex.zeros((size_t)B * m->temb_projs.cout);

  // 6. out
  Act dnormed = conv_backward_fresh(ex, m->conv_out, saved.conv_out, dy);
  Act dh = ex.alloc(saved.h_last.h, saved.h_last.w, saved.h_last.c);
  norm_backward(ex, m->norm_out, saved.h_last, saved.norm_out_stats, true, nullptr, 0, dnormed, dh, nullptr, true);

  // Gradients of the skip tensors, written by the up blocks' concat backward
  // (zeros for any skip no up block consumes), read by the down blocks.
  int consumed = 0;
  for (int i = 0; i < m->num_levels; ++i) consumed += m->up[i].num_layers;
  int skip = saved.num_skips - consumed;  // index of the earliest skip the up path used
  Act dskips[kMaxLevels * (kMaxLayers + 1) + 1];
  for (int i = 0; i < saved.num_skips; ++i) {
    const Act& s = saved.skips[i];
    dskips[i] = i < skip ? ex.zeros(s.h, s.w, s.c) : ex.alloc(s.h, s.w, s.c);
  }

  // 5. up blocks, reversed
  for (int i = m->num_levels - 1; i >= 0; --i) {
    Block& blk = m->up[i];
    if (blk.resample_kind == kResampleConv) {
      const ConvSaved& s = blk.resample_saved;
      dh = conv_backward_fresh(ex, blk.resample_conv, s, dh);
    } else if (blk.resample_kind == kResampleResnet) {
      dh = resnet_backward(ex, blk.resample_resnet, dh, dtemb_projs);
    }
    for (int j = blk.num_layers - 1; j >= 0; --j) {
      if (blk.has_attention) dh = attention_backward_block(ex, blk.attentions[j], dh);
      Act dcat = resnet_backward(ex, blk.resnets[j], dh, dtemb_projs);
      const Act prev = blk.prev[j];
      Act dprev = ex.alloc(prev.h, prev.w, prev.c);  // written whole, with dskip, by the concat backward
      const Act& dskip = dskips[skip++];
      if (ex.run())
        ex.ops().concat_channels_backward(dcat.data, prev.c, dskip.c, B * prev.h * prev.w, dprev.data, dskip.data);
      dh = dprev;
    }
  }

  // 4. mid
  if (m->has_mid) {
    dh = resnet_backward(ex, m->mid.resnets[1], dh, dtemb_projs);
    if (m->mid.has_attention) dh = attention_backward_block(ex, m->mid.attentions[0], dh);
    dh = resnet_backward(ex, m->mid.resnets[0], dh, dtemb_projs);
  }

  // 3. down blocks, reversed; each output that was a skip adds its gradient
  int k = saved.num_skips - 1;
  for (int i = m->num_levels - 1; i >= 0; --i) {
    Block& blk = m->down[i];
    if (blk.resample_kind != kResampleNone) {
      add_into(ex, dh, dskips[k--]);
      if (blk.resample_kind == kResampleConv) {
        const ConvSaved& s = blk.resample_saved;
        dh = conv_backward_fresh(ex, blk.resample_conv, s, dh);
      } else {
        dh = resnet_backward(ex, blk.resample_resnet, dh, dtemb_projs);
      }
    }
    for (int j = blk.num_layers - 1; j >= 0; --j) {
      add_into(ex, dh, dskips[k--]);
      if (blk.has_attention) dh = attention_backward_block(ex, blk.attentions[j], dh);
      dh = resnet_backward(ex, blk.resnets[j], dh, dtemb_projs);
    }
  }
  add_into(ex, dh, dskips[k--]);  // conv_in's output

  // 2. conv_in: weights only (the noisy sample needs no gradient)
  conv_backward(ex, m->conv_in, saved.conv_in, dh, nullptr);

  // 1. embeddings: through the resnets' time projections (one GEMM), SiLU(temb),
  // the class embedding, the time MLP
  float* d_silu_emb = ex.zeros((size_t)B * TE);
  linear_data_grad(ex, m->temb_projs, B, dtemb_projs, d_silu_emb);
  const Ops& ops = ex.ops();
  float* demb = ex.zeros((size_t)B * TE);
  if (ex.run()) ops.silu_backward(saved.emb, d_silu_emb, (long long)B * TE, demb);
  if (m->class_embed == 1 && ex.run()) {
    ops.scatter_add_rows(G(ex, m->class_table), TE, class_cond, B, demb);
  } else if (m->class_embed == 2) {
    float* dc_hidden_act = ex.zeros((size_t)B * TE);
    float* c_hidden_act = ex.arena->alloc((size_t)B * TE);
    if (ex.run()) ops.silu_forward(saved.c_hidden, (long long)B * TE, c_hidden_act);
    linear_backward(ex, m->class_linear_2, c_hidden_act, B, demb, dc_hidden_act);
    float* dc_hidden = ex.zeros((size_t)B * TE);
    if (ex.run()) ops.silu_backward(saved.c_hidden, dc_hidden_act, (long long)B * TE, dc_hidden);
    // With a learned time table the class projection was a lookup in it, whose rows get the gradient.
    const bool class_rows = m->time_embedding_type == 2;
    float* dc_proj = class_rows ? ex.zeros((size_t)B * m->time_proj_dim) : nullptr;
    linear_backward(ex, m->class_linear_1, saved.c_proj, B, dc_hidden, dc_proj);
    if (class_rows && ex.run())
      ops.scatter_add_rows(G(ex, m->time_proj_weight), m->time_proj_dim, class_cond, B, dc_proj);
  }
  float* demb_hidden_act = ex.zeros((size_t)B * TE);
  float* emb_hidden_act = ex.arena->alloc((size_t)B * TE);
  if (ex.run()) ops.silu_forward(saved.emb_hidden, (long long)B * TE, emb_hidden_act);
  linear_backward(ex, m->time_linear_2, emb_hidden_act, B, demb, demb_hidden_act);
  float* demb_hidden = ex.zeros((size_t)B * TE);
  if (ex.run()) ops.silu_backward(saved.emb_hidden, demb_hidden_act, (long long)B * TE, demb_hidden);
  const bool learned = m->time_embedding_type == 2;
  float* dt_proj = learned ? ex.zeros((size_t)B * m->time_proj_dim) : nullptr;
  linear_backward(ex, m->time_linear_1, saved.t_proj, B, demb_hidden, dt_proj);
  if (learned && ex.run()) ops.scatter_add_rows(G(ex, m->time_proj_weight), m->time_proj_dim, timesteps, B, dt_proj);
}

// The batch as the device's ops read it: the caller's arrays on a device
// with host memory; on one with its own memory, arena copies (allocated in
// planning too, every optional one always, so that the plan covers any batch
// of this size).
TrainBatch stage_train_inputs(Exec& ex, const TrainBatch& tb) {
  TrainBatch in = tb;
  const Ops& ops = ex.ops();
  if (!ops.device_memory) return in;
  Model* m = ex.m;
  const size_t n = (size_t)tb.batch * tb.channels * tb.height * tb.width;
  const size_t B = (size_t)tb.batch;
  const size_t class_floats = m->class_embed == 0 ? 0 : m->class_embed == 3 ? B * m->time_embed_dim : B;
  float* x0 = ex.arena->alloc(n);
  float* noise = ex.arena->alloc(n);
  float* per_sample = ex.arena->alloc(4 * B);  // timesteps | sqrt_alpha_prod | sqrt_one_minus_alpha_prod | loss_weights
  float* class_cond = class_floats ? ex.arena->alloc(class_floats) : nullptr;
  in.x0 = x0;
  in.noise = noise;
  in.timesteps = per_sample;
  in.sqrt_alpha_prod = per_sample + B;
  in.sqrt_one_minus_alpha_prod = per_sample + 2 * B;
  in.class_cond = tb.class_cond ? class_cond : nullptr;
  in.loss_weights = tb.loss_weights ? per_sample + 3 * B : nullptr;
  if (ex.run()) {
    ops.upload(x0, tb.x0, n * sizeof(float));
    ops.upload(noise, tb.noise, n * sizeof(float));
    ops.upload(per_sample, tb.timesteps, B * sizeof(float));
    ops.upload(per_sample + B, tb.sqrt_alpha_prod, B * sizeof(float));
    ops.upload(per_sample + 2 * B, tb.sqrt_one_minus_alpha_prod, B * sizeof(float));
    if (tb.loss_weights) ops.upload(per_sample + 3 * B, tb.loss_weights, B * sizeof(float));
    if (tb.class_cond && class_cond) ops.upload(class_cond, tb.class_cond, (size_t)tb.class_cond_len * sizeof(float));
  }
  return in;
}

// add-noise, forward, loss and backward in one pass of the arena (planning
// or running). The loss is formed on the host from the per-sample sums (one
// small copy back); a non-finite loss stops before the backward.
void run_train_step(Exec& ex, const TrainBatch& tb, float* loss_out) {
  Model* m = ex.m;
  const Ops& ops = ex.ops();
  const int B = tb.batch, H = tb.height, W = tb.width;
  const size_t n = (size_t)B * tb.channels * H * W;
  float* noisy = ex.arena->alloc(n);
  const TrainBatch in = stage_train_inputs(ex, tb);  // device pointers
  if (ex.run())
    ops.add_noise(in.x0, in.noise, in.sqrt_alpha_prod, in.sqrt_one_minus_alpha_prod, B, (int)(n / B), noisy);
  Act y = run_forward(ex, H, W, noisy, in.timesteps, in.class_cond, nullptr);
  if (ex.status != kOk) return;

  // Loss: mean over samples of w_b * mean((out - target)^2); out is the UNet
  // output in NCHW terms (NHWC here), divided by t for fourier embeddings.
  DiffusionLossArgs la;
  la.batch = B;
  la.channels = m->out_channels;
  la.pixels = H * W;
  la.target = tb.target;
  la.x0 = in.x0;
  la.noise = in.noise;
  la.sqrt_alpha_prod = in.sqrt_alpha_prod;
  la.sqrt_one_minus_alpha_prod = in.sqrt_one_minus_alpha_prod;
  la.loss_weights = in.loss_weights;
  la.divisors = m->time_embedding_type == 1 ? in.timesteps : nullptr;
  Act dy = ex.alloc(y.h, y.w, y.c);
  double* sample_sums = reinterpret_cast<double*>(ex.arena->alloc(2 * (size_t)B));  // 64-byte aligned
  if (!ex.run()) {
    run_backward(ex, dy, in.timesteps, in.class_cond);  // planning: measure the backward too
    return;
  }
  ops.diffusion_loss(y.data, la, dy.data, sample_sums);
  double* host_sums = static_cast<double*>(mb_alloc(sizeof(double) * (size_t)B));
  if (!host_sums) {
    Message msg;
    msg.add("out of memory for the loss");
    ex.status = kErrOutOfMemory;
    ex.error = msg;
    return;
  }
  ops.download(host_sums, sample_sums, sizeof(double) * (size_t)B);
  const size_t per_sample = (size_t)m->out_channels * H * W;
  double loss = 0;
  for (int b = 0; b < B; ++b) {
    const float weight = tb.loss_weights ? tb.loss_weights[b] : 1.0f;
    loss += weight * host_sums[b] / per_sample;
  }
  mb_free(host_sums);
  *loss_out = (float)(loss / B);
  if (!(*loss_out == *loss_out) || !is_finite_f32(*loss_out)) return;  // the caller reports a non-finite loss
  run_backward(ex, dy, in.timesteps, in.class_cond);
}

}  // namespace

int train_step(Model* m, const TrainBatch& tb, float* loss_out) {
  *loss_out = 0;
  if (!m->training_ready) return set_error(m, kErrState, Name("call trainInit before training"));
  if (tb.batch < 1 || tb.height < 1 || tb.width < 1)
    return set_error(m, kErrInvalidArgument, Name("batch, height and width must be positive"));
  if (m->out_channels != m->in_channels)
    return set_error(m, kErrUnsupported, Name("training needs out_channels = in_channels (a noise prediction)"));
  if (tb.target < 0 || tb.target > 2) return set_error(m, kErrInvalidArgument, Name("unknown training target"));
  int status = check_forward_inputs(m, tb.batch, tb.channels, tb.timesteps, tb.class_cond, tb.class_cond_len);
  if (status != kOk) return status;
  const size_t n = (size_t)tb.batch * tb.channels * tb.height * tb.width;
  if (has_non_finite(tb.x0, (long long)n) || has_non_finite(tb.noise, (long long)n))
    return set_error(m, kErrInvalidArgument, Name("the batch or the noise contains NaN or Inf"));

  // Plan add-noise + forward + backward together (training keeps every activation).
  if (tb.batch != m->planned_batch || tb.height != m->planned_h || tb.width != m->planned_w || !m->planned_training ||
      num_threads() != m->planned_threads) {
    status = check_plan_size(m, tb.batch, tb.height, tb.width, true);
    if (status != kOk) return status;
    Arena planner;
    planner.planning = true;
    Exec plan{m, &planner, true, tb.batch, nullptr, nullptr, true, 0, 0, kOk, Message()};
    float loss = 0;
    run_train_step(plan, tb, &loss);
    if (plan.status != kOk) return fail(m, plan.status, plan.error);
    size_t bytes = 0;
    status = plan_total_bytes(m, planner, &bytes);
    if (status == kOk) status = ensure_arena(m, tb.batch, tb.height, tb.width, true, bytes);
    if (status != kOk) return status;
  }
  float* zero_row = begin_pass(m);
  Exec ex{m, &m->arena, false, tb.batch, zero_row, nullptr, true, tb.dropout_seed, 0, kOk, Message()};
  run_train_step(ex, tb, loss_out);
  if (ex.status != kOk) return fail(m, ex.status, ex.error);
  // A device reports launch errors and faults here, before the loss counts.
  status = device_status(m, "error in the training step");
  if (status != kOk) return status;
  if (!(*loss_out == *loss_out) || !is_finite_f32(*loss_out))
    return set_error(m, kErrInvalidArgument, Name("the loss is NaN or Inf; no gradients were accumulated"));
  return kOk;
}

}  // namespace mb
