/* hubfs.h — libhubfs in one include: open a model from a local path, a hubfs mount or an hf://
 * URL (sources.h: glue_model_open), inspect it and load a tensor-parallel rank or stream it
 * (loader.h), hand its tensors to a framework without a copy (loader_dlpack.h), or read a
 * model from a source of your own (source.h). Link with -lhubfs (pkg-config hubfs, or CMake's
 * find_package(hubfs) and the target hubfs::hubfs). */
#ifndef HUBFS_H
#define HUBFS_H

#include "loader.h"
#include "loader_cli.h"
#include "loader_dlpack.h"
#include "source.h"
#include "sources.h"

/* "0.1.0": the project's version. */
const char *hubfs_library_version(void);

#endif
