/* Unit tests of the namespace's nodes by inode number (inode_table.h), against a plain array
 * that says which inode numbers are in: inserts in the namespace's order (increasing numbers),
 * removals that leave holes inside runs of colliding entries, growth, and clearing. */
#include <stdlib.h>

#include "check.h"
#include "inode_table.h"
#include "namespace.h"

enum { NODES = 200000 };

static uint64_t next_random(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

/* Every inode number 1..NODES found exactly when present says so. */
static int mismatches(const inode_table *table, fs_node *nodes, const bool *present)
{
    int wrong = 0;
    for (size_t i = 0; i < NODES; i++) {
        fs_node *found = inode_table_find(table, nodes[i].ino);
        wrong += present[i] ? found != &nodes[i] : found != NULL;
    }
    return wrong;
}

static void test_inserts_and_removals_agree_with_a_plain_array(void)
{
    fs_node *nodes = calloc(NODES, sizeof *nodes);
    bool *present = calloc(NODES, sizeof *present);
    inode_table table = {0};
    CHECK(inode_table_find(&table, 1) == NULL);
    for (size_t i = 0; i < NODES; i++) {
        nodes[i].ino = i + 1;
        present[i] = inode_table_insert(&table, &nodes[i]);
    }
    CHECK_EQ_INT(table.count, NODES);
    CHECK(table.capacity >= 2 * (size_t)NODES);
    CHECK_EQ_INT(mismatches(&table, nodes, present), 0);
    uint64_t state = 88172645463325252ULL;
    size_t removed = 0;
    for (int round = 0; round < 3 * NODES; round++) {   /* remove, and put back some */
        size_t i = (size_t)(next_random(&state) % NODES);
        if (present[i]) {
            inode_table_remove(&table, nodes[i].ino);
            present[i] = false;
            removed++;
        } else if (round % 3 == 0) {
            present[i] = inode_table_insert(&table, &nodes[i]);
            removed -= present[i];
        }
    }
    CHECK_EQ_INT(table.count, NODES - removed);
    CHECK_EQ_INT(mismatches(&table, nodes, present), 0);
    CHECK(inode_table_find(&table, NODES + 1) == NULL);
    CHECK(inode_table_find(&table, 0) == NULL);
    inode_table_clear(&table);
    CHECK(table.count == 0 && table.capacity == 0 && inode_table_find(&table, 1) == NULL);
    free(nodes);
    free(present);
}

/* Numbers that all want the same slot: removal must move the run back over each hole. */
static void test_colliding_runs(void)
{
    enum { RUN = 300 };
    fs_node nodes[RUN];
    bool present[RUN];
    inode_table table = {0};
    for (size_t i = 0; i < RUN; i++) {
        nodes[i] = (fs_node){.ino = (uint64_t)(i + 1) << 40};   /* equal low bits, much alike */
        present[i] = inode_table_insert(&table, &nodes[i]);
    }
    for (size_t i = 0; i < RUN; i += 3) {
        inode_table_remove(&table, nodes[i].ino);
        present[i] = false;
    }
    int wrong = 0;
    for (size_t i = 0; i < RUN; i++)
        wrong += present[i] ? inode_table_find(&table, nodes[i].ino) != &nodes[i]
                            : inode_table_find(&table, nodes[i].ino) != NULL;
    CHECK_EQ_INT(wrong, 0);
    inode_table_clear(&table);
}

int main(void)
{
    test_inserts_and_removals_agree_with_a_plain_array();
    test_colliding_runs();
    return check_finish("inode_table");
}
