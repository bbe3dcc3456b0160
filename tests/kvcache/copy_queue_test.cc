// CopyQueue: jobs run on its thread in submission order; Poll never blocks and reports each
// finished job once, with its status; Wait takes one job's result; WaitThrough waits for a
// prefix of the queue without taking results. A job held on a gate shows that Submit and Poll
// return while it runs.
#include "kvcache/copy_queue.h"

#include <gtest/gtest.h>

#include <future>
#include <vector>

namespace spillway::kvcache {
namespace {

std::vector<CopyTicket> Tickets(const std::vector<CopyDone>& done) {
  std::vector<CopyTicket> out;
  for (const CopyDone& d : done) out.push_back(d.ticket);
  return out;
}

TEST(CopyQueue, RunsInOrderAndReportsEachJobOnce) {
  CopyQueue queue;
  std::promise<void> gate;
  std::shared_future<void> open = gate.get_future().share();
  std::vector<int> ran;  // written by the queue's thread only, read after Wait(t3)
  const CopyTicket t1 = queue.Submit([&] {
    open.wait();
    ran.push_back(1);
    return absl::OkStatus();
  });
  const CopyTicket t2 = queue.Submit([&] {
    ran.push_back(2);
    return absl::DataLossError("copy failed");
  });
  const CopyTicket t3 = queue.Submit([&] {
    ran.push_back(3);
    return absl::OkStatus();
  });
  EXPECT_EQ(t1, 1u);
  EXPECT_EQ(t2, 2u);
  EXPECT_EQ(t3, 3u);

  // The first job is held: nothing has finished, and Poll returns at once.
  std::vector<CopyDone> done;
  queue.Poll(done);
  EXPECT_TRUE(done.empty());

  gate.set_value();
  queue.WaitThrough(t2);  // 1 and 2 ran; their results stay to be reported

  const CopyDone d3 = queue.Wait(t3);
  EXPECT_EQ(d3.ticket, t3);
  EXPECT_TRUE(d3.status.ok());
  EXPECT_GE(d3.seconds, 0);
  EXPECT_EQ(ran, (std::vector<int>{1, 2, 3}));

  queue.Poll(done);
  EXPECT_EQ(Tickets(done), (std::vector<CopyTicket>{1, 2}));  // 3 was taken by Wait
  EXPECT_TRUE(done[0].status.ok());
  EXPECT_EQ(done[1].status.code(), absl::StatusCode::kDataLoss);
  done.clear();
  queue.Poll(done);
  EXPECT_TRUE(done.empty());
  queue.WaitThrough(0);  // returns at once
}

TEST(CopyQueue, DestructorRunsTheQueuedJobs) {
  int ran = 0;
  {
    CopyQueue queue;
    for (int i = 0; i < 5; ++i) {
      queue.Submit([&] {
        ++ran;
        return absl::OkStatus();
      });
    }
  }
  EXPECT_EQ(ran, 5);
}

}  // namespace
}  // namespace spillway::kvcache
