// The table the packing kernels (bn.cu's pack_rows and unpack_rows) take by value: up to
// K_PACK_MAX tensors laid end to end in a float32 [rows, 8] matrix, the optimizer's layout of
// all parameters (graphs/step's rowLayout). One launch moves a whole table, with the tensors'
// pointers in the kernel's parameters: ONNX Runtime's Concat and Split instead build an index
// table with one int64 per row on the host and copy it to the device on every run, and the
// float16 casts around them are one kernel per tensor. Plain C shared by the CUDA build, the
// host build (emu.cc) and customops.c; the layout is the same on all three (64-bit pointers).
#pragma once

#define K_PACK_MAX 96  // tensors per launch: the table is 1,648 bytes, inside CUDA's 4 KB of parameters

typedef struct {
  void* ptr[K_PACK_MAX];               // the tensors; pack_rows writes zeros for a NULL one (the padding)
  long long start[K_PACK_MAX + 1];     // tensor j is elements [start[j], start[j+1]) of the matrix
  unsigned char half[K_PACK_MAX];      // 1: tensor j is float16 (converted, rounding to nearest even)
  int count;                           // tensors in this table
} KPackTable;
