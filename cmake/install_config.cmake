# Installs the default configuration (install(SCRIPT), SK_CONFIG_SOURCE set
# by CMakeLists.txt) without ever overwriting the operator's: when
# /etc/skolsync/skolsync.yaml exists (under DESTDIR), the new default goes
# next to it as skolsync.yaml.dist, to compare and merge by hand.
set(sk_dir "/etc/skolsync")
if(EXISTS "$ENV{DESTDIR}${sk_dir}/skolsync.yaml")
  message(STATUS "Keeping: $ENV{DESTDIR}${sk_dir}/skolsync.yaml (the new default is skolsync.yaml.dist)")
  file(INSTALL DESTINATION "${sk_dir}" TYPE FILE RENAME skolsync.yaml.dist FILES "${SK_CONFIG_SOURCE}")
else()
  file(INSTALL DESTINATION "${sk_dir}" TYPE FILE FILES "${SK_CONFIG_SOURCE}")
endif()
