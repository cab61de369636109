# Every dependency is a Debian 12 package installed by scripts/setup (see README.md).
find_package(Threads REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(CLI11 2.1 REQUIRED)
find_package(yaml-cpp 0.7 REQUIRED)
find_package(Boost 1.74 REQUIRED)  # Asio + Beast, header-only
find_package(OpenSSL 3 REQUIRED COMPONENTS Crypto)  # HMAC-SHA256 and random bytes for the cluster secret
find_package(PkgConfig REQUIRED)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)  # the tokenizers' Unicode regexes
find_package(ICU REQUIRED COMPONENTS uc)  # Unicode normalization (NFC) for tokenizers
find_package(prometheus-cpp REQUIRED)  # Debian 12: 1.0.1, no version file
if(BUILD_TESTING OR NOT DEFINED BUILD_TESTING)
  find_package(GTest 1.12 REQUIRED)
endif()
