#pragma once
/// @file patternkv.hpp
/// Umbrella header of libpatternkv: PatternKV low-bit KV-cache quantization.

#include "backend.hpp"
#include "concepts.hpp"
#include "config.hpp"
#include "error.hpp"
#include "layer_cache.hpp"
#include "memory_report.hpp"
#include "persistence.hpp"
#include "policies.hpp"
#include "tensor_view.hpp"
#include "user_policies.hpp"
#include "version.hpp"
