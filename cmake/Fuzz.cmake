# libFuzzer targets, built with clang beside the main (gcc) build. Each tests/fuzz/fuzz_<name>.cpp names the
# library sources it needs on a line `// fuzz-sources: a.cpp b.cpp`. A ctest runs each for a bounded time.
# Every target links the static PCRE2 (the tokenizer's regexes); one that does not use it pulls nothing from it.
set(ANVIL_FUZZ_SECONDS 20 CACHE STRING "Seconds each fuzz test runs under ctest")
foreach(fuzz_src ${ANVIL_FUZZ_SOURCES})
  get_filename_component(fuzz_name ${fuzz_src} NAME_WE)
  file(STRINGS ${fuzz_src} fuzz_line REGEX "^// fuzz-sources:")
  string(REPLACE "// fuzz-sources:" "" fuzz_line "${fuzz_line}")
  separate_arguments(fuzz_deps UNIX_COMMAND "${fuzz_line}")
  set(fuzz_dep_paths "")
  foreach(dep ${fuzz_deps})
    list(APPEND fuzz_dep_paths ${CMAKE_SOURCE_DIR}/${dep})
  endforeach()
  set(fuzz_bin ${CMAKE_BINARY_DIR}/${fuzz_name})
  add_custom_command(OUTPUT ${fuzz_bin}
    COMMAND ${CCACHE_PROGRAM} ${CLANGXX} -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined
            -I${CMAKE_SOURCE_DIR}/include -I${CMAKE_SOURCE_DIR}/src -I${PCRE2_INCLUDE_DIR} -DPCRE2_CODE_UNIT_WIDTH=8
            -DFMT_HEADER_ONLY
            ${fuzz_src} ${fuzz_dep_paths} ${PCRE2_STATIC_LIBRARY} -o ${fuzz_bin}
    DEPENDS ${fuzz_src} ${fuzz_dep_paths}
    COMMENT "Building fuzz target ${fuzz_name} (clang, libFuzzer)")
  add_custom_target(${fuzz_name}_build ALL DEPENDS ${fuzz_bin})
  if(ANVIL_TESTS)
    # New inputs go to a scratch corpus in the build tree (the first directory); the checked-in seeds are read only.
    set(scratch ${CMAKE_BINARY_DIR}/fuzz_corpus/${fuzz_name})
    file(MAKE_DIRECTORY ${scratch})
    add_test(NAME ${fuzz_name} COMMAND ${fuzz_bin} -max_total_time=${ANVIL_FUZZ_SECONDS} -rss_limit_mb=2048
             -print_final_stats=1 ${scratch} ${CMAKE_SOURCE_DIR}/tests/fuzz/corpus/${fuzz_name})
  endif()
endforeach()
