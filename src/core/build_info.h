// What this binary was built from: the Anvil version, the git commit (with "-dirty" for uncommitted edits) and
// the backends compiled in ("cpu", "cpu, cuda (sm_90a, sm_80)"). Written at build time by cmake/BuildInfo.cmake.
#pragma once

namespace anvil {

struct BuildInfo {
  const char* version;
  const char* commit;
  const char* backends;
};

const BuildInfo& build_info();

}  // namespace anvil
