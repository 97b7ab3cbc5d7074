/* An empty preload library, for scripts/bench: what loading any preloaded library costs a
 * process start, the reference errshim's start-up cost is measured against. */
int errshim_bench_empty(void);
int errshim_bench_empty(void) { return 0; }
