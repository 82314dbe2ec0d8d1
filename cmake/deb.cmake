# The Debian package (`make deb`, scripts/deb.sh), with CPack's DEB generator.
#
# Why CPack and not debhelper: the package is made from the same install()
# rules as `make install` (one list of what goes where), from a build that
# already exists, in seconds; debhelper would add a second build description
# (debian/rules, control, *.install) that has to be kept in step with
# CMakeLists.txt and a full dpkg-buildpackage rebuild per package, which the
# upgrade test (two versions) would pay twice. What dh_* would add is done
# here: stripped binary (CPACK_STRIP_FILES), Depends: from dpkg-shlibdeps,
# hardening flags from dpkg-buildflags (scripts/deb.sh), md5sums, gzip -9n'd
# manual pages and changelog, and maintainer scripts written the way
# dh_installsystemd writes them (packaging/debian/).
#
# The Debian revision is SK_DEB_RELEASE (default 1); the top entry of
# packaging/debian/changelog must name the version the package gets.
set(SK_DEB_RELEASE 1 CACHE STRING "Debian revision of the package (version ${PROJECT_VERSION}-N)")

# /usr/share/doc/skolsync/changelog.Debian.gz: only in the package (a
# component that `make install` leaves out).
set(SK_DEB_CHANGELOG ${CMAKE_SOURCE_DIR}/packaging/debian/changelog)
file(STRINGS ${SK_DEB_CHANGELOG} SK_DEB_TOP LIMIT_COUNT 1)
if(NOT SK_DEB_TOP MATCHES "^skolsync \\(${PROJECT_VERSION}-[0-9]+\\) ")
  message(FATAL_ERROR "packaging/debian/changelog: the top entry is not for version "
                      "${PROJECT_VERSION} (project() in CMakeLists.txt): ${SK_DEB_TOP}")
endif()
add_custom_command(
  OUTPUT ${CMAKE_BINARY_DIR}/changelog.Debian.gz
  COMMAND gzip -9n -c ${SK_DEB_CHANGELOG} > ${CMAKE_BINARY_DIR}/changelog.Debian.gz
  DEPENDS ${SK_DEB_CHANGELOG}
  COMMENT "changelog.Debian.gz")
add_custom_target(skolsync_deb_changelog ALL DEPENDS ${CMAKE_BINARY_DIR}/changelog.Debian.gz)
install(FILES ${CMAKE_BINARY_DIR}/changelog.Debian.gz DESTINATION ${CMAKE_INSTALL_DOCDIR}
        COMPONENT debian EXCLUDE_FROM_ALL)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME skolsync)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_DEBIAN_PACKAGE_RELEASE ${SK_DEB_RELEASE})
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT) # skolsync_0.1.0-1_amd64.deb
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_PACKAGE_CONTACT "skolsync <dev@skolsync.invalid>")
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE https://github.com/skolsync/skolsync)
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "sync Swedish school data (SS 12000) through Kafka
skolsync reads SS 12000 data from student-record systems (their REST API or
JSON files) and publishes every change on Kafka, one compacted topic per
entity type. Sinks apply the changes to PostgreSQL, SQLite, SCIM identity
systems and OneRoster CSV bundles within seconds, exactly once where the
target allows it.
.
The package installs the daemon, its systemd unit (not enabled or started
on install), an annotated /etc/skolsync/skolsync.yaml and the manual pages
skolsync(1) and skolsync.yaml(5).")
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_SOURCE_DIR}/packaging/debian/conffiles ${CMAKE_SOURCE_DIR}/packaging/debian/postinst
    ${CMAKE_SOURCE_DIR}/packaging/debian/prerm ${CMAKE_SOURCE_DIR}/packaging/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# Everything `make install` installs, and the Debian-only component.
set(CPACK_INSTALL_CMAKE_PROJECTS ${CMAKE_BINARY_DIR} skolsync ALL / ${CMAKE_BINARY_DIR} skolsync
    debian /)
include(CPack)
