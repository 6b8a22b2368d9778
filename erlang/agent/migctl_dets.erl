%% migctl_dets: reading a DETS file directly, beside its server.
%%
%% A DETS table answers every request through one server process, which
%% the application's own session reads and writes share. Asked for many
%% slots (a sample) or for every row (a full check's passes), migctl would
%% queue the application's requests behind its own: at 1.4M sessions one
%% dets:foldl under live traffic took ~50 s, and a full check makes about
%% three. So migctl reads the file itself with file:pread, beside the
%% server, and asks the server only what it must. Two users:
%%
%%   migctl_check   samples: a random set of slots (raw_open/2,
%%                  raw_slots/3);
%%   migctl_buckets full passes (sums, keys listing): fold/4, every slot,
%%                  the collections read in file order in large runs.
%%
%% The file layout is dets_v9's, private to OTP, so it is checked, not
%% trusted (raw_open/2): a set of format version 9, phash2, keys at
%% position 1, on disk, the header's magic, and eight slots spread over the
%% file read the same directly and through the server. Before the first
%% direct read the server's cache of pending writes is flushed to the file
%% (dets:slot/2 does that). Every slot read directly is validated (the
%% collection's size and status, every object decodes, every key hashes to
%% that slot); a slot that fails (rewritten meanwhile by a live writer) is
%% read again through the server with dets:slot/2.
%%
%% A DETS file is a linear hash table: the slot of a key is a function of
%% phash2(Key) and the slot count Next alone (slot/3). When the file grows,
%% slot p splits and some of its keys move to p + M: a pass that reads
%% slots while that happens can see a key twice or miss it, so a direct
%% pass is only trusted if Next did not change (fold/4 checks it after
%% every band and at the end, and redoes the pass through the server
%% otherwise). fold/4 also fixes the table (dets:safe_fixtable/2, as
%% dets:foldl/3 does for its whole pass): a fixed DETS table does not grow
%% (Next stays) and does not hand space freed during the pass to other
%% collections, so a collection the slot entries pointed at is either
%% still that slot's or marked free (which fails validation: the server
%% reads the slot). dets_v9 does rewrite a collection in place when the
%% slot keeps its objects and size class (a touched session), fixed or
%% not; a pread racing that pwrite can see a mix of both versions. One
%% that still validates is a row changed while the pass ran, as the
%% server's own fold can also miss or catch a write: a check treats such
%% rows as in flight (its bucket goes to the next round, and suspects are
%% read again by key before anything is reported).
%%
%% DETS's 2 GB limit. dets_utils:alloc/2 places nothing past
%% 2^31 - 50,000,000 bytes (2,097,483,648; it keeps the rest for its free
%% lists); at that address an insert fails inside the DETS server with
%% no_more_space_on_file, which OTP 25's server treats as a bug: the table
%% answers errors from then on, its close fails, and the repair on
%% reopening needs a second file as large, which fails the same way
%% (measured: 1,425,606 sessions of 1 KB inserted one by one, 2.097 GB).
%% And a fixed table hands no space freed during the fixation to new
%% collections: every session created or deleted while a pass holds the
%% table costs new space at the end of the file. So a pass does not fix a
%% file within the reserve of that limit (room/1: migctl_node's
%% dets_fix_reserve_bytes, 128 MiB by default) and stops, releasing the
%% table, when the file grows into it: the operator is told why
%% ({dets_near_limit, FileSize, Limit}) before the application's table
%% breaks.
-module(migctl_dets).

-export([used_slots/1, slot/2, slot/3, m/1, slot_objects/2,
         raw_open/2, raw_close/1, raw_slots/3, fold/4, room/1, need_room/1, near_limit_text/2]).

%% The last address dets_utils:alloc/2 gives out (2^31 less the 50 MB it
%% keeps for its free lists), and the default reserve below it.
-define(DETS_LIMIT, 2097483648).
-define(FIX_RESERVE, 134217728).

%% dets_v9's collection status of a live object collection.
-define(DETS_ACTIVE, 16#12345678).
%% A direct pass (direct/2): slot entries read ?ENTRIES slots at a time
%% (a segment array part: 512 segments of 256 slots), collections sorted
%% in bands of ?BAND bytes of the file, read in runs of at most ?RUN bytes
%% whose collections are less than ?GAP bytes apart.
-define(ENTRIES, 131072).
-define(BAND, 67108864).
-define(RUN, 1048576).
-define(AHEAD, 2).
-define(GAP, 65536).

-import(migctl_lib, [fail/1]).

%% used_slots(Tab) -> Next: the slots that hold the rows.
used_slots(Tab) ->
    %% no_slots is {Min, Used, Max}.
    case dets:info(Tab, no_slots) of
        {_, U, _} -> U;
        U -> U
    end.

%% m(Next): the largest power of two =< Next.
m(Next) -> 1 bsl (bits(Next) - 1).

slot(Key, Next) -> slot(Key, m(Next), Next).

%% slot(Key, M, Next), M = m(Next): dets_v9:db_hash/2's slot of Key.
slot(Key, M, Next) ->
    H = erlang:phash2(Key),
    case H band (M - 1) of
        S when S < Next - M -> H band (2 * M - 1);
        S -> S
    end.

%% bits(X): the number of bits of X > 0 (1 bsl (bits(X) - 1) =< X).
bits(X) -> bits(X, 0).
bits(0, B) -> B;
bits(X, B) -> bits(X bsr 1, B + 1).

%% slot_objects(Tab, I): slot I through the server.
slot_objects(Tab, I) ->
    case dets:slot(Tab, I) of
        L when is_list(L) -> L;
        '$end_of_table' -> [];
        {error, E} -> fail(migctl_lib:error_text("dets", E))
    end.

%% ------------------------------------------------------------ raw access

%% raw_open(Tab, Next) -> {ok, {raw, Fd, Tab, Next, M}} | no
%% The file of Tab opened for reading beside its server, when its layout
%% is the one raw_slots/3 knows (a set of version 9, phash2, keys at
%% position 1, on disk) and a few slots read directly equal what the
%% server reads.
raw_open(Tab, Next) ->
    try
        set = dets:info(Tab, type),
        1 = dets:info(Tab, keypos),
        phash2 = dets:info(Tab, hash),
        false = dets:info(Tab, ram_file),
        true = Next > 0,
        File = dets:info(Tab, filename),
        %% dets:slot/2 writes the server's cache of pending writes to the
        %% file before it reads (dets:sync/1 would also fsync).
        _ = slot_objects(Tab, 0),
        {ok, Fd} = file:open(File, [read, raw, binary]),
        Raw = {raw, Fd, Tab, Next, m(Next)},
        case check_raw(Raw) of
            true -> {ok, Raw};
            false -> file:close(Fd), no
        end
    catch _:_ -> no
    end.

raw_close({raw, Fd, _, _, _}) -> file:close(Fd).

%% check_raw(Raw): the header is dets_v9's and eight slots spread over
%% the file read the same directly and through the server.
check_raw({raw, Fd, Tab, Next, _} = Raw) ->
    case file:pread(Fd, 0, 20) of
        {ok, <<_:32, 16#0abcdef:32, _:32, _:32, 9:32>>} ->
            Slots = lists:usort([J * (Next - 1) div 7 || J <- lists:seq(0, 7)]),
            lists:all(fun(I) ->
                          case raw_slots(Raw, [I], fun(_, R) -> R end) of
                              [{ok, Objs}] -> lists:sort(Objs) =:= lists:sort(slot_objects(Tab, I));
                              _ -> false
                          end
                      end, Slots);
        _ -> false
    end.

%% raw_slots(Raw, Slots, OnSlot) -> [OnSlot(Slot, {ok, [Object]} | retry)]
%% dets_v9's layout: the segment array parts' addresses at 312 + 4*Part
%% (Part = Seg div 512), a part holds 512 segment addresses, a segment 256
%% slot entries <<Size:32, Pos:32>>; at Pos the collection
%% <<Size:32, ?ACTIVE:32, (<<ObjSize:32, term_to_binary(Object)>>)*>>
%% (ObjSize counting its own 4 bytes). Two batches of preads: the slot
%% entries, then the collections. Each slot is decoded and handed to
%% OnSlot at once, so that no more than one slot's sessions are held.
raw_slots({raw, Fd, _, _, _} = Raw, Slots, OnSlot) ->
    Segs = lists:usort([I bsr 8 || I <- Slots]),
    SegAddr = seg_addrs(Fd, Segs),
    Entries = case file:pread(Fd, [{maps:get(I bsr 8, SegAddr) + 8 * (I band 255), 8} || I <- Slots]) of
                  {ok, Es} -> Es;
                  _ -> [eof || _ <- Slots]
              end,
    colls(Raw, OnSlot, Slots, Entries).

%% colls(Raw, OnSlot, Slots, Entries): the collections the slot entries
%% point at, one list pread, each decoded and handed to OnSlot in turn.
colls({raw, Fd, _, _, _} = Raw, OnSlot, Slots, Entries) ->
    Ptrs = [case E of
                <<0:32, _:32>> -> empty;
                <<Size:32, Pos:32>> when Size >= 8 -> {Pos, Size};
                _ -> bad
            end || E <- Entries],
    Colls = case file:pread(Fd, [P || {_, _} = P <- Ptrs]) of
                {ok, Cs} -> Cs;
                _ -> [eof || {_, _} <- Ptrs]
            end,
    zip_colls(Raw, OnSlot, Slots, Ptrs, Colls).

zip_colls(_, _, [], [], _) -> [];
zip_colls(Raw, On, [I | Is], [empty | Ps], Cs) -> [On(I, {ok, []}) | zip_colls(Raw, On, Is, Ps, Cs)];
zip_colls(Raw, On, [I | Is], [bad | Ps], Cs) -> [On(I, retry) | zip_colls(Raw, On, Is, Ps, Cs)];
zip_colls(Raw, On, [I | Is], [{_, Size} | Ps], [C | Cs]) ->
    [On(I, decode_coll(Raw, I, Size, C)) | zip_colls(Raw, On, Is, Ps, Cs)].

decode_coll({raw, _, _, Next, M}, I, Size, <<Size:32, ?DETS_ACTIVE:32, KO/binary>>) ->
    try {ok, objs(KO, I, M, Next, [])}
    catch _:_ -> retry
    end;
decode_coll(_, _, _, _) -> retry.

%% objs(Bin, Slot, M, Next, Acc): the objects of a collection, each a
%% tuple whose key hashes to Slot (else the match fails: retry).
objs(<<>>, _, _, _, Acc) -> lists:reverse(Acc);
objs(<<Sz:32, Rest/binary>>, I, M, Next, Acc) when Sz >= 4 ->
    L = Sz - 4,
    <<Obj:L/binary, T/binary>> = Rest,
    O = binary_to_term(Obj),
    true = tuple_size(O) >= 1,
    I = slot(element(1, O), M, Next),
    objs(T, I, M, Next, [O | Acc]).

%% seg_addrs(Fd, Segs) -> #{Seg => Address}: one pread per segment array
%% part used (a part addresses 512 segments, 131,072 slots).
seg_addrs(Fd, Segs) ->
    Parts = lists:usort([S bsr 9 || S <- Segs]),
    PartAddr = maps:from_list([{P, begin {ok, <<A:32>>} = file:pread(Fd, 312 + 4 * P, 4), A end} || P <- Parts]),
    PartBins = maps:map(fun(_, A) -> {ok, B} = file:pread(Fd, A, 4 * 512), B end, PartAddr),
    maps:from_list([{S, begin
                            B = maps:get(S bsr 9, PartBins),
                            Off = 4 * (S band 511),
                            <<_:Off/binary, Addr:32, _/binary>> = B,
                            Addr
                        end} || S <- Segs]).

%% ------------------------------------------------------------ full pass

%% fold(Tab, OnRow, Reset, How) -> raw | server | redone
%% OnRow(Object) for every object of the table, as dets:foldl/3 would
%% (each key once, what the file holds while the pass runs). How: auto
%% (directly when raw_open/2 agrees, else through the server), server
%% (dets:foldl/3, the reference), raw_unfixed (directly without fixing the
%% table: for the tests of the fallback, since a fixed table never grows).
%% The result says how the rows were read: raw (directly), server
%% (dets:foldl/3), redone (directly first, but the slot count changed or a
%% read failed midway: Reset() was called, so the caller drops what OnRow
%% gathered, and the whole pass was done again through the server).
%% Errors of the server fail as {error, <<"dets: ...">>}; what OnRow
%% raises passes through.
fold(Tab, OnRow, _, server) -> need_room(Tab), server_fold(Tab, OnRow), server;
fold(Tab, OnRow, Reset, How) when How =:= auto; How =:= raw_unfixed ->
    Fix = How =:= auto,
    need_room(Tab),
    Fix andalso dets:safe_fixtable(Tab, true),
    try
        Next = used_slots(Tab),
        case raw_open(Tab, Next) of
            no ->
                server_fold(Tab, OnRow),
                server;
            {ok, Raw} ->
                Done = try direct(Raw, OnRow)
                       after raw_close(Raw)
                       end,
                case Done andalso used_slots(Tab) =:= Next of
                    true -> raw;
                    false ->
                        Reset(),
                        server_fold(Tab, OnRow),
                        redone
                end
        end
    after
        Fix andalso dets:safe_fixtable(Tab, false)
    end.

server_fold(Tab, OnRow) ->
    %% dets:foldl/3 fixes the table for its whole pass: the room is
    %% looked at every 10,000 rows.
    case dets:foldl(fun(R, N) ->
                            OnRow(R),
                            N rem 10000 =:= 0 andalso need_room(Tab),
                            N + 1
                    end, 1, Tab) of
        {error, E} -> fail(migctl_lib:error_text("dets", E));
        _ -> ok
    end.

%% room(Tab) -> ok | {near_limit, FileSize, Limit}: whether Tab's file may
%% be fixed, or stay fixed (see DETS's 2 GB limit at the top).
room(Tab) ->
    Reserve = case application:get_env(migctl_node, dets_fix_reserve_bytes) of
                  {ok, R} when is_integer(R), R >= 0 -> R;
                  _ -> ?FIX_RESERVE
              end,
    %% The file's size on disk (a stat), not dets:info(Tab, file_size),
    %% which writes the server's cache of delayed writes to the file first:
    %% asked at every batch of a pass, that changed how the application's
    %% writes interleave with a fixed traversal, and a DETS traversal is
    %% not exact under inserts even fixed (a row then came twice).
    case file_size(Tab) of
        Size when is_integer(Size), Size + Reserve > ?DETS_LIMIT -> {near_limit, Size, max(0, ?DETS_LIMIT - Reserve)};
        _ -> ok
    end.

%% file_size(Tab): the size of Tab's file on disk, or undefined.
file_size(Tab) ->
    case dets:info(Tab, filename) of
        F when is_list(F) ->
            case file:read_file_info(F) of
                {ok, I} -> element(2, I);
                _ -> undefined
            end;
        _ -> undefined
    end.

%% need_room(Tab): room/1, or the pass fails with dets_near_limit (a
%% fixation this process holds ends with it).
need_room(Tab) ->
    case room(Tab) of
        ok -> ok;
        {near_limit, Size, Max} -> fail(near_limit_text(Size, Max))
    end.

%% near_limit_text(FileSize, Max): the reason an operator reads.
near_limit_text(Size, Max) ->
    iolist_to_binary(io_lib:format(
      "dets_near_limit: the DETS file is ~b bytes, past ~b (DETS fails at ~b bytes, and a pass holding "
      "the table makes the file grow): the pass stopped and let go of the table; the file must shrink "
      "first (expired sessions deleted, or the file compacted by a repair), see the runbook, DETS's 2 GB limit",
      [Size, Max, ?DETS_LIMIT])).

%% direct(Raw, OnRow) -> true | false: every slot, read in two phases.
%% First every slot entry (Next * 8 bytes, a whole segment of 256 entries
%% a pread), kept as <<Pos:32, Size:32, Slot:32>> per non-empty slot (12
%% bytes a slot: 17 MB at 1.4M), grouped in bands of ?BAND bytes of the
%% file by Pos. Then band by band, the collections in file order: a run of
%% collections closer than ?GAP to each other is one pread of at most ?RUN
%% bytes, decoded slot by slot and handed to OnRow, so that a few runs of
%% sessions (?AHEAD + 1, read_band/3) are held at a time. In slot order
%% the collections of a batch of slots lie all over the file (a DETS file
%% places objects in write order, not by slot): one small pread each (~3
%% us from the page cache, a disk seek when the file is not cached); in
%% file order the reads are few, large and sequential, as dets:foldl/3's
%% own are. false when the slot count changed (checked after every band,
%% so that a pass that cannot be trusted stops early), the entries could
%% not be read, or the reader process failed.
direct({raw, Fd, Tab, Next, _} = Raw, OnRow) ->
    case entries(Fd, Next, 0, #{}) of
        {ok, Bands} ->
            lists:all(fun(B) ->
                              need_room(Tab),
                              read_band(Raw, OnRow, maps:get(B, Bands))
                                  andalso used_slots(Tab) =:= Next
                      end, lists:sort(maps:keys(Bands)));
        error -> false
    end.

%% entries(Fd, Next, From, Bands) -> {ok, #{Band => [<<Pos:32, Size:32, Slot:32>>*]}} | error
entries(_, Next, From, Bands) when From >= Next -> {ok, Bands};
entries(Fd, Next, From, Bands) ->
    To = min(From + ?ENTRIES, Next),
    case batch_entries(Fd, From, To) of
        {ok, Es} ->
            ByBand = group(From, Es, #{}),
            entries(Fd, Next, To, maps:fold(fun(B, L, Acc) ->
                                                    Acc#{B => [list_to_binary(L) | maps:get(B, Acc, [])]}
                                            end, Bands, ByBand));
        error -> error
    end.

%% group(Slot, Entries, Acc): the non-empty entries (a binary of
%% <<Size:32, Pos:32>>*, walked without making a term of each: most slots
%% of a file are empty) by band. A malformed entry (Size < 8) is kept with
%% Size 0: read_band/3 reads that slot through the server.
group(_, <<>>, Acc) -> Acc;
group(I, <<0:32, _:32, Es/binary>>, Acc) -> group(I + 1, Es, Acc);
group(I, <<Size:32, Pos:32, Es/binary>>, Acc) ->
    Sz = if Size >= 8 -> Size; true -> 0 end,
    B = Pos div ?BAND,
    group(I + 1, Es, Acc#{B => [<<Pos:32, Sz:32, I:32>> | maps:get(B, Acc, [])]}).

%% read_band(Raw, OnRow, Bins) -> true | false: the collections of one
%% band, in file order. A reader process (reader/3) preads the runs, at
%% most ?AHEAD ahead (a binary of a run goes to this process without a
%% copy), while this one decodes and validates the run before and hands
%% its objects to OnRow. false when the reader failed (the pass is then
%% redone through the server).
read_band({raw, _, Tab, _, _} = Raw, OnRow, Bins) ->
    %% Sorted as small integers Pos * 2^26 + Index (Pos < 2^32; a band of
    %% 64 MB has fewer than 2^26 collections): about four times faster
    %% than sorting {Pos, Size, Slot} tuples.
    Es = list_to_tuple([{Sz, I} || Bin <- Bins, <<_:32, Sz:32, I:32>> <= Bin]),
    Keys = lists:sort(sort_keys(Bins, 0, [])),
    {Bad, Good} = lists:foldr(fun(K, {B, G}) ->
                                      {Sz, I} = element((K band 16#3ffffff) + 1, Es),
                                      case Sz of
                                          0 -> {[I | B], G};
                                          _ -> {B, [{K bsr 26, Sz, I} | G]}
                                      end
                              end, {[], []}, Keys),
    _ = [lists:foreach(OnRow, slot_objects(Tab, I)) || I <- Bad],
    Runs = runs(Good),
    Self = self(),
    {Pid, Mon} = spawn_monitor(fun() -> reader(Raw, Self, Runs) end),
    try
        _ = [Pid ! {Self, credit} || _ <- lists:seq(1, ?AHEAD)],
        consume(Raw, OnRow, Pid, Mon, Runs)
    after
        exit(Pid, kill),
        erlang:demonitor(Mon, [flush])
    end.

%% sort_keys(Bins, Index, Acc): Pos * 2^26 + Index of every entry, Index
%% counting the entries of Bins in order (as read_band/3's tuple does).
sort_keys([], _, Acc) -> Acc;
sort_keys([Bin | Bins], X, Acc) -> sort_keys(Bin, Bins, X, Acc).

sort_keys(<<P:32, _:64, R/binary>>, Bins, X, Acc) -> sort_keys(R, Bins, X + 1, [(P bsl 26) bor X | Acc]);
sort_keys(<<>>, Bins, X, Acc) -> sort_keys(Bins, X, Acc).

consume({raw, _, Tab, _, _} = Raw, OnRow, Pid, Mon, [{Start, Len, Items} | Runs]) ->
    receive
        {Pid, Start, Bin} ->
            Pid ! {self(), credit},
            lists:foreach(fun({ok, Objs}) -> lists:foreach(OnRow, Objs);
                             ({retry, I}) -> lists:foreach(OnRow, slot_objects(Tab, I))
                          end, decode_run(Raw, Start, Len, Items, Bin)),
            consume(Raw, OnRow, Pid, Mon, Runs);
        {'DOWN', Mon, process, Pid, _} -> false
    end;
consume(_, _, _, _, []) -> true.

%% reader(Raw, Parent, Runs): preads each run once Parent grants a credit,
%% with a file descriptor of its own.
reader({raw, _, Tab, _, _}, Parent, Runs) ->
    {ok, Fd} = file:open(dets:info(Tab, filename), [read, raw, binary]),
    lists:foreach(fun({Start, Len, _}) ->
                          receive {Parent, credit} -> ok end,
                          Bin = case file:pread(Fd, Start, Len) of
                                    {ok, B} -> B;
                                    _ -> <<>>
                                end,
                          Parent ! {self(), Start, Bin}
                  end, Runs).

%% runs(Items) -> [{Start, Len, Items}]: Items sorted by Pos, in runs of
%% at most ?RUN bytes whose collections are less than ?GAP apart.
runs([]) -> [];
runs([{P, Sz, _} | _] = Items) ->
    {Run, Rest, End} = take_run(Items, P, P + Sz, []),
    [{P, End - P, Run} | runs(Rest)].

take_run([{P, Sz, _} = It | Rest], Start, End, Acc)
  when Acc =:= []; P - End < ?GAP andalso P + Sz - Start =< ?RUN ->
    take_run(Rest, Start, max(End, P + Sz), [It | Acc]);
take_run(Rest, _, End, Acc) -> {lists:reverse(Acc), Rest, End}.

%% decode_run(Raw, Start, Len, Items, Bin) -> [{ok, Objs} | {retry, Slot}]:
%% Bin read at Start, each collection validated (decode_coll/4); a slot
%% that does not validate (or a short read) is to be read through the
%% server.
decode_run(Raw, Start, _Len, Items, Bin) ->
    [case Off + Sz =< byte_size(Bin) andalso decode_coll(Raw, I, Sz, binary:part(Bin, Off, Sz)) of
         {ok, _} = Ok -> Ok;
         _ -> {retry, I}
     end || {P, Sz, I} <- Items, Off <- [P - Start]].

%% batch_entries(Fd, From, To) -> {ok, <<(<<Size:32, Pos:32>>)*>>} | error: the
%% slot entries of slots [From, To), read a whole segment (256 entries, 2
%% KB) per pread instead of 8 bytes a slot.
batch_entries(Fd, From, To) ->
    try
        Segs = lists:seq(From bsr 8, (To - 1) bsr 8),
        SegAddr = seg_addrs(Fd, Segs),
        {ok, Bins} = file:pread(Fd, [{maps:get(S, SegAddr), 8 * 256} || S <- Segs]),
        true = lists:all(fun(B) -> byte_size(B) =:= 8 * 256 end, Bins),
        All = << <<B/binary>> || B <- Bins >>,
        Skip = 8 * (From band 255),
        Len = 8 * (To - From),
        <<_:Skip/binary, Mine:Len/binary, _/binary>> = All,
        {ok, Mine}
    catch _:_ -> error
    end.
