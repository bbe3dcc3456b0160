// --device resolution (server/cli/loaded_engine.h): cpu always works, auto falls back to the
// CPU without a GPU, and cuda without a GPU (or without the CUDA backend built in) fails at
// start with a message that says why and what to use instead. The no-GPU branches are the
// ones CI runs; on a GPU machine the cuda branches are checked instead.
#if defined(SPW_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

#include "gtest/gtest.h"
#include "server/cli/loaded_engine.h"

namespace spillway::server {
namespace {

bool HaveGpu() {
#if defined(SPW_WITH_CUDA)
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
#else
  return false;
#endif
}

TEST(DeviceOptionTest, CpuIsAlwaysCpu) {
  absl::StatusOr<std::string> d = ResolveDevice("cpu");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, "cpu");
}

TEST(DeviceOptionTest, UnknownNameIsRejected) {
  absl::StatusOr<std::string> d = ResolveDevice("tpu");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(d.status().message().find("auto, cpu or cuda"), std::string::npos);
}

TEST(DeviceOptionTest, AutoPicksTheGpuOnlyWhenPresent) {
  absl::StatusOr<std::string> d = ResolveDevice("auto");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, HaveGpu() ? "cuda" : "cpu");
}

TEST(DeviceOptionTest, CudaWithoutAGpuFailsWithAClearMessage) {
  absl::StatusOr<std::string> d = ResolveDevice("cuda");
  if (HaveGpu()) {
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(*d, "cuda");
    return;
  }
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string m(d.status().message());
  EXPECT_NE(m.find("--device cuda"), std::string::npos) << m;
  EXPECT_NE(m.find("--device cpu"), std::string::npos) << m;
#if defined(SPW_WITH_CUDA)
  EXPECT_NE(m.find("no CUDA device"), std::string::npos) << m;
#else
  EXPECT_NE(m.find("without the CUDA backend"), std::string::npos) << m;
#endif
}

TEST(DeviceOptionTest, LoadEngineOnCudaWithoutAGpuFailsBeforeLoading) {
  if (HaveGpu()) GTEST_SKIP() << "a GPU is present";
  absl::StatusOr<LoadedEngine> e = LoadEngine("/nonexistent/model.gguf", {.device = "cuda"});
  ASSERT_FALSE(e.ok());
  // The device is checked first: the missing file is never reached.
  EXPECT_EQ(e.status().code(), absl::StatusCode::kFailedPrecondition) << e.status();
}

TEST(DeviceOptionTest, VersionListsTheBackends) {
#if defined(SPW_WITH_CUDA)
  EXPECT_EQ(CompiledBackends(), "cpu, cuda");
#else
  EXPECT_EQ(CompiledBackends(), "cpu");
#endif
}

}  // namespace
}  // namespace spillway::server
