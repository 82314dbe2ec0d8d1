cmake_minimum_required(VERSION 3.18)
# Makes one manual page from its template in man/ (cmake -P, run by the build):
#   -DIN=man/x.in -DOUT=build/man/x -DVERSION=0.1.0 -DDATE=2026-12-03
#   [-DSKOLSYNC=build/skolsync]  also replace the line @OPTIONS@ with the
#                                output of `skolsync connectors --man`
# and writes OUT.gz next to it (gzip -9n: no name or time stamp inside, so
# the same sources give the same bytes, as Debian's reproducible builds want).
file(READ ${IN} page)
if(DEFINED SKOLSYNC)
  execute_process(COMMAND ${SKOLSYNC} connectors --man
    OUTPUT_VARIABLE options RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0 OR options STREQUAL "")
    message(FATAL_ERROR "${SKOLSYNC} connectors --man failed (${rc})")
  endif()
  string(FIND "${page}" "\n@OPTIONS@\n" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "${IN} has no line @OPTIONS@")
  endif()
  string(REPLACE "\n@OPTIONS@\n" "\n${options}" page "${page}")
endif()
string(REPLACE "@VERSION@" "${VERSION}" page "${page}")
string(REPLACE "@DATE@" "${DATE}" page "${page}")
file(WRITE ${OUT} "${page}")
execute_process(COMMAND gzip -9n -c INPUT_FILE ${OUT} OUTPUT_FILE ${OUT}.gz RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "gzip ${OUT} failed")
endif()
