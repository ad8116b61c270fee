// Package step builds the graphs cardseg-ort runs from the one forward declaration in
// graphs/model: the train step (training-mode forward, loss, gradients, AdamW, running-stat
// updates), the eval step (eval-mode forward, loss, confusion counts) and the inference model
// (batch norm folded, what export ships), each in FP32 or, with Config.FP16, mixed precision.
//
// # Train step (TrainStep)
//
// Inputs, all float32 unless said otherwise:
//
//	image                 [B,3,H,W] normalised (float32 in FP16 too; cast inside)
//	target                int64 [B,H,W], class per pixel
//	<param>, <bn buffer>  every tensor of Arch.Params() by torchvision name and shape
//	lr                    scalar
//	step                  scalar: the 1-based index this update gets (AdamW bias correction)
//	param_mask            [P], Config.Masked only
//	adam.m, adam.v        [P]: AdamW moments, flat in the order of the trainable params
//	loss_scale            scalar, FP16 only (DefaultLossScaling.Init = 65536 to start)
//	loss_scale.good       scalar, FP16 only (0 to start)
//
// Outputs: loss, loss_ce, loss_dice, grad_norm (float32 scalars; grad_norm of the unscaled
// gradients before clipping), found_inf (FP16 only: 1 if the step was skipped), then
// <name>.next for every state input: each trainable parameter and batch-norm buffer, adam.m,
// adam.v, and in FP16 also step, loss_scale and loss_scale.good. StatePairs lists these
// input→output pairs, so a driver feeds each .next output back as the next step's input.
//
// The FP16 step keeps float32 master weights as its inputs (checkpoints and state are the
// same as FP32's) and casts each to float16 where it is used; convolutions, activations and
// resizes run in float16; batch-norm statistics, the loss, the gradients of the masters and
// the optimizer in float32. It differentiates loss·loss_scale, unscales the gradients, and
// when any is Inf or NaN passes parameters, moments, running statistics and step through
// unchanged and backs the scale off (LossScaling; torch.cuda.amp.GradScaler's rules). All of
// it is graph state, so a GPU driver never reads anything back to run the next step. Every
// node has a CUDA kernel and every shape is static.
//
// # Eval step (EvalStep) and inference (Inference)
//
// Eval: inputs image float32 [N,3,H,W] (N symbolic), target int64 [N,H,W] and every network
// tensor; outputs loss, loss_ce, loss_dice, ce_sum, dice_inter, dice_p, dice_t (float32 [N])
// and confusion int64 [N,K,K], confusion_total int64 [K,K]; the same in FP16. Inference:
// input image float32 [N,3,H,W], output logits float32 [N,K,H,W], weights as initializers
// (float16 in FP16, metadata cardseg.precision = fp16).
//
// It may import graphs, graphs/model and the standard library.
package step
