/* OpenFX message suite, written for FaceFix from the published OpenFX specification ("ofxMessage.h"). */
#ifndef FACEFIX_OFX_MESSAGE_H
#define FACEFIX_OFX_MESSAGE_H

#include "ofxCore.h"

#define kOfxMessageSuite "OfxMessageSuite"
#define kOfxMessageFatal "OfxMessageFatal"
#define kOfxMessageError "OfxMessageError"
#define kOfxMessageWarning "OfxMessageWarning"
#define kOfxMessageMessage "OfxMessageMessage"
#define kOfxMessageLog "OfxMessageLog"

typedef struct OfxMessageSuiteV1 {
    OfxStatus (*message)(void *handle, const char *messageType, const char *messageId, const char *format, ...);
} OfxMessageSuiteV1;

#endif
