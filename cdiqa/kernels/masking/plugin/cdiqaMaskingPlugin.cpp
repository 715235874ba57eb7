// cdiqa masking op as a TensorRT IPluginV3 plugin: see cdiqaMaskingPlugin.h and README.md.
//
// Compiled by the host C++ compiler; the kernels (../masking.cu) by nvcc into the same
// library. Every method is noexcept: a failure is reported to TensorRT as a non-zero status
// (or nullptr), with a message to stderr, never as an exception crossing the ABI.
#include "cdiqaMaskingPlugin.h"

#include <cstdio>
#include <cstring>

#include "masking.cuh"

using namespace nvinfer1;

namespace cdiqa {
namespace {

// Upper bound of cdiqa_masking_workspace_size over every shape (masking.cu): zero from
// CDIQA_MASKING_PLANES_FOR_ONE_BLOCK planes on; below, planes * segments <= 2 *
// TARGET_BLOCKS + PLANES_FOR_ONE_BLOCK (segments ~ TARGET_BLOCKS / planes, the floor in
// tiles_per_block at most doubling it), two floats each.
constexpr size_t kWorkspaceBound =
    (2 * (size_t)CDIQA_MASKING_TARGET_BLOCKS + CDIQA_MASKING_PLANES_FOR_ONE_BLOCK) * 2 *
    sizeof(float);

void report(char const* what) noexcept {
  std::fprintf(stderr, "[cdiqa::%s] %s\n", kMaskingPluginName, what);
}

bool isLinear(PluginTensorDesc const& d, DataType type) noexcept {
  return d.format == TensorFormat::kLINEAR && d.type == type;
}

}  // namespace

MaskingPlugin::MaskingPlugin(int32_t k) : mK(k) {
  mFields.emplace_back(kMaskingAttributeWindow, &mK, PluginFieldType::kINT32, 1);
  mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
  mFieldCollection.fields = mFields.data();
}

IPluginCapability* MaskingPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept {
  switch (type) {
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
  }
  return nullptr;
}

IPluginV3* MaskingPlugin::clone() noexcept {
  try {
    return new MaskingPlugin(mK);
  } catch (...) {
    report("clone: out of memory");
    return nullptr;
  }
}

char const* MaskingPlugin::getPluginName() const noexcept { return kMaskingPluginName; }
char const* MaskingPlugin::getPluginVersion() const noexcept { return kMaskingPluginVersion; }
char const* MaskingPlugin::getPluginNamespace() const noexcept { return kMaskingPluginNamespace; }

int32_t MaskingPlugin::getNbOutputs() const noexcept { return kMaskingNbOutputs; }

int32_t MaskingPlugin::configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
                                       DynamicPluginTensorDesc const* out,
                                       int32_t nbOutputs) noexcept {
  if (nbInputs != kMaskingNbInputs || nbOutputs != kMaskingNbOutputs) return -1;
  if (in[0].desc.dims.nbDims != 4 || in[1].desc.dims.nbDims != 4 ||
      in[2].desc.dims.nbDims != 1 || in[3].desc.dims.nbDims != 1) {
    report("configurePlugin: expected e, a (B, C, H, W) and gamma, sigma (C,)");
    return -1;
  }
  return out[0].desc.dims.nbDims == 3 ? 0 : -1;
}

int32_t MaskingPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs,
                                          DataType const* /*inputTypes*/,
                                          int32_t /*nbInputs*/) const noexcept {
  if (nbOutputs != kMaskingNbOutputs) return -1;
  outputTypes[0] = DataType::kFLOAT;  // stats accumulate in float32 whatever e's type
  return 0;
}

int32_t MaskingPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
                                       DimsExprs const* /*shapeInputs*/,
                                       int32_t /*nbShapeInputs*/, DimsExprs* outputs,
                                       int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept {
  if (nbInputs != kMaskingNbInputs || nbOutputs != kMaskingNbOutputs ||
      inputs[0].nbDims != 4) {
    return -1;
  }
  outputs[0].nbDims = 3;  // stats (B, 2, C) from e (B, C, H, W)
  outputs[0].d[0] = inputs[0].d[0];
  outputs[0].d[1] = exprBuilder.constant(2);
  outputs[0].d[2] = inputs[0].d[1];
  return 0;
}

bool MaskingPlugin::supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut,
                                              int32_t nbInputs, int32_t nbOutputs) noexcept {
  if (nbInputs != kMaskingNbInputs || nbOutputs != kMaskingNbOutputs || pos < 0 ||
      pos >= nbInputs + nbOutputs) {
    return false;
  }
  PluginTensorDesc const& d = inOut[pos].desc;
  switch (pos) {
    case 0:  // e: FP32 or FP16, linear (NCHW)
      return isLinear(d, DataType::kFLOAT) || isLinear(d, DataType::kHALF);
    case 1:  // a: the same type as e
      return isLinear(d, inOut[0].desc.type);
    default:  // gamma, sigma, stats: FP32
      return isLinear(d, DataType::kFLOAT);
  }
}

size_t MaskingPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                                       DynamicPluginTensorDesc const* /*outputs*/,
                                       int32_t /*nbOutputs*/) const noexcept {
  if (nbInputs != kMaskingNbInputs) return 0;
  Dims const& lo = inputs[0].min;
  Dims const& hi = inputs[0].max;
  bool fixed = true;
  for (int32_t i = 0; i < 4; ++i) fixed = fixed && lo.d[i] == hi.d[i];
  if (fixed) {  // one shape: the exact size
    return cdiqa_masking_workspace_size(static_cast<int>(hi.d[0]), static_cast<int>(hi.d[1]),
                                        static_cast<int>(hi.d[2]), static_cast<int>(hi.d[3]));
  }
  // The size is not monotonic in the shape (the split depends on B*C), so a profile gets
  // the bound, which is at most 40 KiB; none once the smallest B*C uses one block a plane.
  return (long long)lo.d[0] * lo.d[1] >= CDIQA_MASKING_PLANES_FOR_ONE_BLOCK ? 0
                                                                            : kWorkspaceBound;
}

int32_t MaskingPlugin::onShapeChange(PluginTensorDesc const* in, int32_t nbInputs,
                                     PluginTensorDesc const* /*out*/,
                                     int32_t nbOutputs) noexcept {
  if (nbInputs != kMaskingNbInputs || nbOutputs != kMaskingNbOutputs || in[0].dims.nbDims != 4)
    return -1;
  return 0;
}

int32_t MaskingPlugin::enqueue(PluginTensorDesc const* inputDesc,
                               PluginTensorDesc const* /*outputDesc*/, void const* const* inputs,
                               void* const* outputs, void* workspace,
                               cudaStream_t stream) noexcept {
  Dims const& dims = inputDesc[0].dims;
  int const B = static_cast<int>(dims.d[0]);
  int const C = static_cast<int>(dims.d[1]);
  int const H = static_cast<int>(dims.d[2]);
  int const W = static_cast<int>(dims.d[3]);
  cdiqa_masking_dtype const dtype =
      inputDesc[0].type == DataType::kHALF ? CDIQA_MASKING_F16 : CDIQA_MASKING_F32;
  cudaError_t const err = cdiqa_masking_forward(
      inputs[0], inputs[1], dtype, static_cast<float const*>(inputs[2]),
      static_cast<float const*>(inputs[3]), static_cast<float*>(outputs[0]), B, C, H, W, mK,
      workspace, cdiqa_masking_workspace_size(B, C, H, W), stream);
  if (err != cudaSuccess) {
    report(cudaGetErrorString(err));
    return -1;
  }
  return 0;
}

IPluginV3* MaskingPlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept {
  return clone();  // no per-context resources
}

PluginFieldCollection const* MaskingPlugin::getFieldsToSerialize() noexcept {
  return &mFieldCollection;
}

// ---------------------------------------------------------------------------- creator

MaskingPluginCreator::MaskingPluginCreator() {
  mFields.emplace_back(kMaskingAttributeWindow, nullptr, PluginFieldType::kINT32, 1);
  mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
  mFieldCollection.fields = mFields.data();
}

char const* MaskingPluginCreator::getPluginName() const noexcept { return kMaskingPluginName; }
char const* MaskingPluginCreator::getPluginVersion() const noexcept {
  return kMaskingPluginVersion;
}
char const* MaskingPluginCreator::getPluginNamespace() const noexcept {
  return kMaskingPluginNamespace;
}

PluginFieldCollection const* MaskingPluginCreator::getFieldNames() noexcept {
  return &mFieldCollection;
}

IPluginV3* MaskingPluginCreator::createPlugin(char const* /*name*/,
                                              PluginFieldCollection const* fc,
                                              TensorRTPhase /*phase*/) noexcept {
  int32_t k = -1;
  for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
    PluginField const& f = fc->fields[i];
    if (f.name != nullptr && std::strcmp(f.name, kMaskingAttributeWindow) == 0 &&
        f.type == PluginFieldType::kINT32 && f.length == 1 && f.data != nullptr) {
      k = *static_cast<int32_t const*>(f.data);
    }
  }
  if (k < 1 || k % 2 == 0) {  // spec.yaml: k odd, >= 1
    report("createPlugin: attribute 'k' must be an odd INT32 >= 1");
    return nullptr;
  }
  try {
    return new MaskingPlugin(k);
  } catch (...) {
    report("createPlugin: out of memory");
    return nullptr;
  }
}

}  // namespace cdiqa

// ---------------------------------------------------------------------------- registration
// getCreators: what IPluginRegistry::loadLibrary (Python load_library, trtexec
// --dynamicPlugins, Triton) calls on a dynamically loaded plugin library. The static
// registrar (built with CDIQA_MASKING_STATIC_REGISTRATION, the *_registered library)
// registers on dlopen, which is what trtexec --staticPlugins and ONNX Runtime's TensorRT
// execution provider (trt_extra_plugin_lib_paths) rely on. One library never does both, so
// the creator is never registered twice.
#ifdef CDIQA_MASKING_STATIC_REGISTRATION
using cdiqa::MaskingPluginCreator;  // the macro pastes the name into an identifier
REGISTER_TENSORRT_PLUGIN(MaskingPluginCreator);
#else
extern "C" {
__attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(
    int32_t& nbCreators) {
  static cdiqa::MaskingPluginCreator creator;
  static nvinfer1::IPluginCreatorInterface* const creators[] = {&creator};
  nbCreators = 1;
  return creators;
}
}
#endif
