# protoc_c_fix.cmake — works around a protoc-c 1.4.1 bug: an rpc whose
# lower-cased name is a C keyword ("rpc Register" -> "register") becomes a
# service-struct member of that name, and the header does not compile.
# We rename such members to "<keyword>_" in the generated header. Only the
# C member name changes; descriptors, wire names and the
# <package>__<service>__<method>() functions are untouched.
#
#   cmake -DHEADER=x.pb-c.h -P protoc_c_fix.cmake
file(READ "${HEADER}" text)
foreach(kw auto break case char const continue default do double else enum
        extern float for goto if inline int long register restrict return
        short signed sizeof static struct switch typedef union unsigned void
        volatile while)
  string(REPLACE "(*${kw})(" "(*${kw}_)(" text "${text}")
endforeach()
file(WRITE "${HEADER}" "${text}")
