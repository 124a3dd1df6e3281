/* OpenFX memory suite, written for FaceFix from the published OpenFX specification ("ofxMemory.h"). */
#ifndef FACEFIX_OFX_MEMORY_H
#define FACEFIX_OFX_MEMORY_H

#include "ofxCore.h"

#define kOfxMemorySuite "OfxMemorySuite"

typedef struct OfxMemorySuiteV1 {
    OfxStatus (*memoryAlloc)(void *handle, size_t nBytes, void **allocatedData);
    OfxStatus (*memoryFree)(void *allocatedData);
} OfxMemorySuiteV1;

#endif
