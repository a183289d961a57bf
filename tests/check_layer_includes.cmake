# Layer boundaries of ../shared/ARCHITECTURE.md, checked on the include lines: formats/ know no model family and no
# engine (no models/ or runtime/ headers); backends/ know no model, format-to-model or request-level code (no
# models/ or runtime/ headers); models/ see backends, formats and core but not the engine (no runtime/ headers).
# Run: cmake -D SOURCE_DIR=<repo> -P tests/check_layer_includes.cmake (ctest: layer_boundaries).
if(NOT SOURCE_DIR)
  message(FATAL_ERROR "set -D SOURCE_DIR=<repository root>")
endif()
set(rules
  "formats|models/|runtime/"
  "backends|models/|runtime/"
  "models|runtime/")
set(violations "")
set(num_files 0)
foreach(rule IN LISTS rules)
  string(REPLACE "|" ";" parts "${rule}")
  list(POP_FRONT parts layer)
  file(GLOB_RECURSE files "${SOURCE_DIR}/src/${layer}/*.h" "${SOURCE_DIR}/src/${layer}/*.cpp"
       "${SOURCE_DIR}/src/${layer}/*.cu" "${SOURCE_DIR}/src/${layer}/*.cuh")
  list(LENGTH files n)
  math(EXPR num_files "${num_files} + ${n}")
  foreach(f IN LISTS files)
    file(STRINGS "${f}" includes REGEX "^[ \t]*#[ \t]*include[ \t]*\"")
    foreach(line IN LISTS includes)
      foreach(forbidden IN LISTS parts)
        if(line MATCHES "\"${forbidden}")
          file(RELATIVE_PATH rel "${SOURCE_DIR}" "${f}")
          string(APPEND violations "\n  ${rel}: ${line} (src/${layer}/ must not include ${forbidden} headers)")
        endif()
      endforeach()
    endforeach()
  endforeach()
endforeach()
if(num_files LESS 20)
  message(FATAL_ERROR "layer_boundaries: only ${num_files} source files found under ${SOURCE_DIR}/src; wrong SOURCE_DIR?")
endif()
if(violations)
  message(FATAL_ERROR "layer boundaries broken:${violations}")
endif()
message(STATUS "layer_boundaries: ${num_files} files of formats/, backends/ and models/ checked")
