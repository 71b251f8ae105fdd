# The native engine's C++ sources for the processor being built for, with per-file ISA flags
# (never global ones, so one build runs on any CPU of the architecture). Sets
# KILN_ENGINE_SOURCES (everything but the Python bindings), KILN_BINDING_SOURCES and
# KILN_ARCH_DEFINITIONS. Included by this directory's CMakeLists.txt and by
# tests/aarch64 (the cross-built kernel test driver).
set(_kiln_src ${CMAKE_CURRENT_LIST_DIR})
file(GLOB _kiln_core CONFIGURE_DEPENDS ${_kiln_src}/*.cpp ${_kiln_src}/kernels/*.cpp
  ${_kiln_src}/ops/*.cpp)
set(KILN_BINDING_SOURCES ${_kiln_src}/module.cpp ${_kiln_src}/bindings_kernels.cpp)
list(REMOVE_ITEM _kiln_core ${KILN_BINDING_SOURCES})
file(GLOB _kiln_generic CONFIGURE_DEPENDS ${_kiln_src}/kernels/generic/*.cpp)

if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64")
  file(GLOB _kiln_avx2 CONFIGURE_DEPENDS ${_kiln_src}/kernels/avx2/*.cpp)
  file(GLOB _kiln_avx512 CONFIGURE_DEPENDS ${_kiln_src}/kernels/avx512/*.cpp)
  set_source_files_properties(${_kiln_avx2} PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
  set_source_files_properties(${_kiln_avx512} PROPERTIES
    COMPILE_OPTIONS
    "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni;-mavx512bf16;-mfma;-mf16c")
  # AMX tiles: run only when CPUID and the OS grant them (amx_int8_ready)
  file(GLOB _kiln_amx CONFIGURE_DEPENDS ${_kiln_src}/kernels/amx/*.cpp)
  set_source_files_properties(${_kiln_amx} PROPERTIES
    COMPILE_OPTIONS "-mavx512f;-mavx512bw;-mavx512vl;-mamx-tile;-mamx-int8")
  file(GLOB _kiln_vbmi CONFIGURE_DEPENDS ${_kiln_src}/kernels/avx512vbmi/*.cpp)
  set_source_files_properties(${_kiln_vbmi} PROPERTIES
    COMPILE_OPTIONS "-mavx512f;-mavx512bw;-mavx512vbmi")
  set(_kiln_isa ${_kiln_avx2} ${_kiln_avx512} ${_kiln_amx} ${_kiln_vbmi})
  set(KILN_ARCH_DEFINITIONS KILN_HAS_X86=1 KILN_HAS_ARM=0)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64|arm64|ARM64")
  # NEON is part of the aarch64 baseline; dotprod and i8mm kernels get their own flags and
  # run only when HWCAP says the CPU has them.
  file(GLOB _kiln_neon CONFIGURE_DEPENDS ${_kiln_src}/kernels/neon/*.cpp)
  file(GLOB _kiln_neondot CONFIGURE_DEPENDS ${_kiln_src}/kernels/neondot/*.cpp)
  file(GLOB _kiln_neoni8mm CONFIGURE_DEPENDS ${_kiln_src}/kernels/neoni8mm/*.cpp)
  set_source_files_properties(${_kiln_neondot} PROPERTIES COMPILE_OPTIONS
    "-march=armv8.2-a+dotprod")
  set_source_files_properties(${_kiln_neoni8mm} PROPERTIES COMPILE_OPTIONS
    "-march=armv8.2-a+dotprod+i8mm")
  set(_kiln_isa ${_kiln_neon} ${_kiln_neondot} ${_kiln_neoni8mm})
  set(KILN_ARCH_DEFINITIONS KILN_HAS_X86=0 KILN_HAS_ARM=1)
else()
  set(_kiln_isa "")
  set(KILN_ARCH_DEFINITIONS KILN_HAS_X86=0 KILN_HAS_ARM=0)
endif()

set(KILN_ENGINE_SOURCES ${_kiln_core} ${_kiln_generic} ${_kiln_isa})
