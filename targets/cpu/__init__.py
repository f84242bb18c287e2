"""Shared CPU lowering (x86 now, ARM later): TVM kernels with aotc's own schedule rules, memory planning and the AOT C driver."""
