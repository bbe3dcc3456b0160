// DrainUntilClosed: the events a request's TokenChannel gets until the engine loop closes it
// (engine-loop tests). Test-only.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <vector>

#include "scheduler/api/token_event.h"

namespace spillway::testing {

// Waits (up to 5 s) until `channel` is closed; returns every event it got.
inline std::vector<scheduler::TokenEvent> DrainUntilClosed(scheduler::TokenChannel& channel) {
  using namespace std::chrono_literals;
  std::vector<scheduler::TokenEvent> all;
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  bool closed = false;
  while (!closed && std::chrono::steady_clock::now() < deadline) {
    for (scheduler::TokenEvent& e : channel.Drain(&closed)) all.push_back(std::move(e));
    if (!closed) std::this_thread::sleep_for(1ms);
  }
  EXPECT_TRUE(closed) << "channel not closed within 5 s";
  return all;
}

}  // namespace spillway::testing
