# embed_lines.cmake — turns a text file (one entry per line) into a C file
# defining a sorted array of strings:
#
#   cmake -DIN=list.txt -DOUT=list.c -DNAME=authd_common_passwords -P embed_lines.cmake
#
# defines   const char *const NAME[];  const size_t NAME_count;
# Entries are lower-cased (ASCII) and sorted bytewise, so lookups can
# bsearch with strcmp. Characters outside printable ASCII are refused.
file(READ "${IN}" raw)
if(raw MATCHES "[;\\[\\]]")
  message(FATAL_ERROR "embed_lines: ${IN} holds ; [ or ], which CMake lists cannot carry")
endif()
file(STRINGS "${IN}" lines ENCODING UTF-8)
set(entries "")
foreach(l IN LISTS lines)
  if(l STREQUAL "")
    continue()
  endif()
  string(TOLOWER "${l}" l)
  list(APPEND entries "${l}")
endforeach()
list(REMOVE_DUPLICATES entries)
list(SORT entries COMPARE STRING CASE SENSITIVE)
list(LENGTH entries n)
set(body "")
foreach(e IN LISTS entries)
  if(NOT e MATCHES "^[ -~]+$")
    message(FATAL_ERROR "embed_lines: non-printable entry in ${IN}")
  endif()
  string(REPLACE "\\" "\\\\" e "${e}")
  string(REPLACE "\"" "\\\"" e "${e}")
  string(REPLACE "?" "\\?" e "${e}")
  string(APPEND body "    \"${e}\",\n")
endforeach()
file(WRITE "${OUT}.tmp" "/* Generated from ${IN} by embed_lines.cmake: do not edit. */\n#include <stddef.h>\nextern const char *const ${NAME}[];\nextern const size_t ${NAME}_count;\nconst char *const ${NAME}[] = {\n${body}};\nconst size_t ${NAME}_count = ${n};\n")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
