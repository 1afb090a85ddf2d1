// Registers the development addons' test and benchmark entry points (dev_hooks.cpp).
#pragma once
#include <napi.h>

void mb_register_dev_hooks(Napi::Env env, Napi::Object exports);
