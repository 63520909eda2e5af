/*
 * stages.c - the table of stage kinds a pipeline can be built from.
 * A new stage adds its ops here and its file to meson.build.
 */
#include <string.h>

#include "dp_internal.h"

extern const struct dp_stage_ops dp_xconnect_ops;
extern const struct dp_stage_ops dp_netflow_ops;
extern const struct dp_stage_ops dp_one2many_ops;
extern const struct dp_stage_ops dp_ip6flow_ops;

static const struct dp_stage_ops *const stage_kinds[] = {
    &dp_xconnect_ops,
    &dp_netflow_ops,
    &dp_one2many_ops,
    &dp_ip6flow_ops,
};

const struct dp_stage_ops *dp_stage_ops_find(const char *kind)
{
    size_t i;

    for (i = 0; i < RTE_DIM(stage_kinds); i++)
        if (strcmp(stage_kinds[i]->kind, kind) == 0)
            return stage_kinds[i];
    return NULL;
}
